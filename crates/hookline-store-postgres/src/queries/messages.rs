//! Messages, their deliveries and attempts, resend and recover: `impl MessageStore`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use futures_util::future::join_all;
use hookline_core::id::{AppId, AttemptId, EndpointId, MessageId};
use hookline_core::model::{Attempt, Destination, Endpoint, Message, MessageStatus, TriggerType};
use hookline_core::page::{ListQuery, Page};
use hookline_core::store::{
    AttemptFilter, CreatedMessage, DeliveryJob, MessageFilter, MessageStore, NewMessage,
};
use hookline_core::{Code, Error, Result};

use super::idempotency::claim_idempotent;
use super::{Select, changed, execute, found, key_column, query_opt, query_rows};
use crate::PostgresStore;
use crate::error::storage;
use crate::rows::{self, code, ms, read};
use tokio_postgres::Row;
use tokio_postgres::types::Json;

/// Stores a message, one destination per endpoint it is for, and its idempotency record,
/// and returns those endpoints and the deliveries it leased: what [`MessageStore::create_message`] does (in a group
/// commit, [`crate::group`]), and [`IngestStore::ingest`] and the job tracker for the
/// messages they make. The caller commits, then announces the work (the job tracker does
/// not). See [`insert_messages`].
///
/// [`IngestStore::ingest`]: hookline_core::store::IngestStore::ingest
pub(crate) async fn insert_message(
    db: &impl GenericClient,
    new: &NewMessage,
) -> Result<Result<Inserted>> {
    let mut outcomes = insert_messages(db, &[new]).await?;
    Ok(outcomes.pop().expect("one outcome per message"))
}

/// Stores `batch`: each message, one destination per endpoint it is for, and its
/// idempotency record, in statements for the whole batch rather than for each message:
/// one multi-row insert of the messages, one read of endpoints per application, one
/// multi-row insert of the destinations, and one statement per idempotency key; the
/// messages' insert and the endpoints' reads are pipelined. Returns, for each message in
/// order, the endpoints it is for and the deliveries leased as it asked
/// ([`NewMessage::lease`]). The caller commits, then announces the work.
///
/// A conflict (the idempotency key or the `eventId` taken, by a committed message or an
/// earlier one of the batch) or a missing application is that message's inner `Err`: it
/// is found without a failing statement, so the transaction goes on for the others, and
/// the message leaves nothing behind. The outer `Err` is a statement's failure.
pub(crate) async fn insert_messages(
    db: &impl GenericClient,
    batch: &[&NewMessage],
) -> Result<Vec<Result<Inserted>>> {
    // Idempotency keys first, in the batch's order: of two messages with one key, the
    // second finds it taken.
    let claims = join_all(batch.iter().map(|new| async move {
        match &new.idempotency {
            Some(record) => claim_idempotent(db, record, new.message.created_at, false).await,
            None => Ok(()),
        }
    }))
    .await;
    let mut outcomes: Vec<Option<Result<Inserted>>> = Vec::with_capacity(batch.len());
    for claim in claims {
        match claim {
            Ok(()) => outcomes.push(None),
            Err(error) if error.code() == Code::IdempotencyConflict => {
                outcomes.push(Some(Err(error)));
            }
            Err(error) => return Err(error),
        }
    }
    let claimed: Vec<&NewMessage> = batch
        .iter()
        .zip(&outcomes)
        .filter(|(_, outcome)| outcome.is_none())
        .map(|(new, _)| *new)
        .collect();
    // The messages' rows and their applications' endpoints, in one round trip (the
    // statements are pipelined on the connection). One read per application rather than
    // one for all: a statement of `app_id = $1` keeps its generic plan, where `= ANY($1)`
    // is planned again at every call.
    let mut apps: Vec<&str> = claimed
        .iter()
        .map(|new| new.message.app_id.as_str())
        .collect();
    apps.sort_unstable();
    apps.dedup();
    // With the application's uid and rate, which the jobs of leased deliveries carry.
    let sql = format!(
        "SELECT {}, app.uid, app.throttle_rate
         FROM endpoint JOIN app ON app.id = endpoint.app_id
         WHERE endpoint.app_id = $1",
        rows::ENDPOINT_COLUMNS
    );
    let read_apps = join_all(apps.iter().map(|app| {
        let sql = &sql;
        async move { query_rows(db, sql, &[app]).await }
    }));
    let (stored, read_apps) = tokio::join!(insert_message_rows(db, &claimed), read_apps);
    let stored = stored?;
    // A message not stored is a conflict, or its application is missing.
    let mut unstored_apps: Vec<&str> = claimed
        .iter()
        .filter(|new| !stored.contains(new.message.id.as_str()))
        .map(|new| new.message.app_id.as_str())
        .collect();
    unstored_apps.sort_unstable();
    unstored_apps.dedup();
    let existing: HashSet<String> = if unstored_apps.is_empty() {
        HashSet::new()
    } else {
        query_rows(
            db,
            "SELECT id FROM app WHERE id = ANY($1)",
            &[&unstored_apps],
        )
        .await
        .map_err(storage)?
        .iter()
        .map(|row| read(row, |c| c.take::<String>()))
        .collect::<Result<_>>()?
    };

    // A message whose `eventId` was taken gives its idempotency key back.
    let given_back: Vec<&str> = claimed
        .iter()
        .filter(|new| !stored.contains(new.message.id.as_str()))
        .filter_map(|new| new.idempotency.as_ref().map(|record| record.key.as_str()))
        .collect();
    if !given_back.is_empty() {
        execute(
            db,
            "DELETE FROM idempotency WHERE key = ANY($1)",
            &[&given_back],
        )
        .await
        .map_err(storage)?;
    }

    // Fan-out follows the one rule in `Endpoint::wants`, as in every backend.
    let mut endpoints: HashMap<&str, Vec<(Endpoint, AppRate)>> = HashMap::new();
    for (app, found) in apps.iter().zip(read_apps) {
        let found = found
            .map_err(storage)?
            .iter()
            .map(|row| {
                read(row, |columns| {
                    let endpoint = rows::endpoint(columns)?;
                    let uid: Option<String> = columns.take()?;
                    let rate = columns
                        .take::<Option<i32>>()?
                        .map(u16::try_from)
                        .transpose()
                        .map_err(Error::storage)?;
                    Ok((endpoint, (uid, rate)))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        endpoints.insert(app, found);
    }
    let mut queued = Queued::default();
    for (new, outcome) in batch.iter().zip(&mut outcomes) {
        if outcome.is_some() {
            continue;
        }
        let message = &new.message;
        if !stored.contains(message.id.as_str()) {
            *outcome = Some(Err(if existing.contains(message.app_id.as_str()) {
                Error::conflict("a message with this eventId already exists")
            } else {
                Error::NotFound("application")
            }));
            continue;
        }
        let targets: Vec<&(Endpoint, AppRate)> = endpoints
            .get(message.app_id.as_str())
            .into_iter()
            .flatten()
            .filter(|(endpoint, _)| match &new.only_endpoint {
                Some(only) => &endpoint.id == only,
                None => endpoint.wants(&message.event_type, message.channels.as_deref()),
            })
            .collect();
        let mut leased = Vec::new();
        for (endpoint, app) in targets.iter().copied() {
            // Leased as a claim leaves a row: due again when the lease ends.
            let lease = new
                .lease
                .as_ref()
                .and_then(|lease| lease.takes(endpoint.disabled, leased.len()));
            queued.msgs.push(message.id.as_str());
            queued.apps.push(message.app_id.as_str());
            queued.created.push(ms(message.created_at));
            queued.endpoints.push(endpoint.id.as_str());
            queued.owners.push(lease.map(|lease| lease.owner.as_str()));
            queued.until.push(lease.map(|lease| ms(lease.until)));
            if let Some(lease) = lease {
                leased.push(Leased {
                    destination: lease.destination(message, &endpoint.id),
                    endpoint: endpoint.clone(),
                    app: app.clone(),
                });
            }
        }
        *outcome = Some(Ok(Inserted {
            endpoints: targets
                .iter()
                .map(|(endpoint, _)| endpoint.id.clone())
                .collect(),
            leased,
        }));
    }
    if let ([new], false) = (batch, queued.msgs.is_empty()) {
        // One message's deliveries, as in `insert_message_rows`: scalars, and arrays of
        // what differs between its deliveries.
        execute(
            db,
            "INSERT INTO destination (msg_id, endpoint_id, app_id, status, next_attempt,
                 attempts, trigger_type, lease_owner, lease_until, msg_created_at, updated_at)
             SELECT $1, d.endpoint_id, $3, $4, COALESCE(d.lease_until, $5), 0, 0,
                 d.lease_owner, d.lease_until, $5, $5
             FROM unnest($2::text[], $6::text[], $7::timestamptz[])
                 AS d (endpoint_id, lease_owner, lease_until)",
            &[
                &new.message.id.as_str(),
                &queued.endpoints,
                &new.message.app_id.as_str(),
                &code(MessageStatus::Sending.code()),
                &ms(new.message.created_at),
                &queued.owners,
                &queued.until,
            ],
        )
        .await
        .map_err(storage)?;
    } else if !queued.msgs.is_empty() {
        execute(
            db,
            "INSERT INTO destination (msg_id, endpoint_id, app_id, status, next_attempt,
                 attempts, trigger_type, lease_owner, lease_until, msg_created_at, updated_at)
             SELECT d.msg_id, d.endpoint_id, d.app_id, $5, COALESCE(d.lease_until, d.created),
                 0, 0, d.lease_owner, d.lease_until, d.created, d.created
             FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $6::text[],
                     $7::timestamptz[])
                 AS d (msg_id, endpoint_id, app_id, created, lease_owner, lease_until)",
            &[
                &queued.msgs,
                &queued.endpoints,
                &queued.apps,
                &queued.created,
                &code(MessageStatus::Sending.code()),
                &queued.owners,
                &queued.until,
            ],
        )
        .await
        .map_err(storage)?;
    }
    Ok(outcomes
        .into_iter()
        .map(|outcome| outcome.expect("every message has its outcome"))
        .collect())
}

/// What [`insert_messages`] stored of one message: the endpoints it is for, and the
/// deliveries it leased ([`NewMessage::lease`]).
#[derive(Debug)]
pub(crate) struct Inserted {
    pub endpoints: Vec<EndpointId>,
    pub leased: Vec<Leased>,
}

/// An application's uid and `throttle_rate`.
type AppRate = (Option<String>, Option<u16>);

/// A delivery leased as its message was created, with the rows its job is made of (the
/// endpoint still sealed).
#[derive(Debug)]
pub(crate) struct Leased {
    destination: Destination,
    endpoint: Endpoint,
    app: AppRate,
}

/// The messages of `news` that lease their deliveries, kept for their jobs
/// ([`PostgresStore::leased_jobs`]) while the originals go to a group commit.
pub(crate) fn leasing(news: &[NewMessage]) -> Vec<Arc<Message>> {
    news.iter()
        .filter(|new| new.lease.is_some())
        .map(|new| Arc::new(new.message.clone()))
        .collect()
}

impl PostgresStore {
    /// The jobs of deliveries leased as their messages (among `messages`) were created,
    /// from the rows the create read: what a claim of them would have returned, without
    /// its round trip. Called once the create has committed, so it does not fail: a job
    /// it cannot make (an endpoint whose secrets do not open) is left to its lease.
    pub(crate) fn leased_jobs(
        &self,
        leased: Vec<Leased>,
        messages: &[Arc<Message>],
    ) -> Vec<DeliveryJob> {
        let by_id: HashMap<&MessageId, &Arc<Message>> = messages
            .iter()
            .map(|message| (&message.id, message))
            .collect();
        leased
            .into_iter()
            .filter_map(|leased| {
                let message = *by_id.get(&leased.destination.msg_id)?;
                let endpoint = rows::open_endpoint(self.sealer(), leased.endpoint)
                    .inspect_err(|error| {
                        tracing::error!(%error, "a leased delivery's endpoint does not open; it is due again when its lease ends");
                    })
                    .ok()?;
                let (app_uid, app_throttle_rate) = leased.app;
                Some(DeliveryJob {
                    destination: leased.destination,
                    message: Arc::clone(message),
                    endpoint: Arc::new(endpoint),
                    app_uid,
                    app_throttle_rate,
                })
            })
            .collect()
    }
}

/// The destinations a batch queues, one array per column.
#[derive(Default)]
struct Queued<'a> {
    msgs: Vec<&'a str>,
    endpoints: Vec<&'a str>,
    apps: Vec<&'a str>,
    created: Vec<DateTime<Utc>>,
    /// The lease's owner and end, for deliveries leased as they are created.
    owners: Vec<Option<&'a str>>,
    until: Vec<Option<DateTime<Utc>>>,
}

/// Inserts the rows of `batch` in one statement, in the batch's order (the order of its
/// locks, and the earlier of two messages with one `eventId` is the one kept), leaving
/// out each whose `eventId` (or id) is taken or whose application is missing; returns
/// the ids of those it inserted.
async fn insert_message_rows(
    db: &impl GenericClient,
    batch: &[&NewMessage],
) -> Result<HashSet<String>> {
    let stored = match batch {
        [] => Vec::new(),
        [new] => insert_one_message_row(db, new).await?,
        _ => insert_many_message_rows(db, batch).await?,
    };
    stored
        .iter()
        .map(|row| read(row, |c| c.take::<String>()))
        .collect()
}

/// [`insert_message_rows`] for one message: its inserted id's row, if it was inserted.
async fn insert_one_message_row(db: &impl GenericClient, new: &NewMessage) -> Result<Vec<Row>> {
    // One message (a job's event, a forwarded webhook, a create alone in its commit) goes
    // as scalars: the arrays of the multi-row form cost one row more than they save
    // (measured in the statement log: 79 µs against 46).
    let message = &new.message;
    let stored = query_opt(
        db,
        "INSERT INTO message (id, app_id, event_id, event_type, payload, channels, headers,
             created_at, payload_expires_at)
         SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text[], $7::jsonb,
             $8::timestamptz, $9::timestamptz
         WHERE EXISTS (SELECT 1 FROM app WHERE app.id = $2)
         ON CONFLICT DO NOTHING RETURNING id",
        &[
            &message.id.as_str(),
            &message.app_id.as_str(),
            &message.event_id,
            &message.event_type,
            &message.payload,
            &message.channels,
            &rows::message_headers(&message.headers),
            &ms(message.created_at),
            &new.payload_expires_at.map(ms),
        ],
    )
    .await
    .map_err(storage)?;
    Ok(stored.into_iter().collect())
}

/// [`insert_message_rows`] for more than one message: one multi-row insert; the rows of
/// the ids it inserted.
async fn insert_many_message_rows(
    db: &impl GenericClient,
    batch: &[&NewMessage],
) -> Result<Vec<Row>> {
    let messages = || batch.iter().map(|new| &new.message);
    let ids: Vec<&str> = messages().map(|m| m.id.as_str()).collect();
    let apps: Vec<&str> = messages().map(|m| m.app_id.as_str()).collect();
    let event_ids: Vec<Option<&str>> = messages().map(|m| m.event_id.as_deref()).collect();
    let event_types: Vec<&str> = messages().map(|m| m.event_type.as_str()).collect();
    let payloads: Vec<Option<&str>> = messages().map(|m| m.payload.as_deref()).collect();
    // Each message's channels are a slice of one array (arrays of arrays must be
    // rectangular): where they start in it, and how many (none for no channels).
    let mut channels: Vec<&str> = Vec::new();
    let mut channel_from: Vec<i32> = Vec::with_capacity(batch.len());
    let mut channel_count: Vec<Option<i32>> = Vec::with_capacity(batch.len());
    for message in messages() {
        channel_from.push(i32::try_from(channels.len()).map_err(Error::storage)?);
        channel_count.push(match &message.channels {
            Some(list) => {
                channels.extend(list.iter().map(String::as_str));
                Some(i32::try_from(list.len()).map_err(Error::storage)?)
            }
            None => None,
        });
    }
    let headers = messages()
        .map(|m| {
            rows::message_headers(&m.headers)
                .map(|Json(headers)| serde_json::to_string(headers))
                .transpose()
        })
        .collect::<Result<Vec<Option<String>>, _>>()
        .map_err(Error::storage)?;
    let created: Vec<DateTime<Utc>> = messages().map(|m| ms(m.created_at)).collect();
    let expires: Vec<Option<DateTime<Utc>>> = batch
        .iter()
        .map(|new| new.payload_expires_at.map(ms))
        .collect();
    query_rows(
        db,
        "INSERT INTO message (id, app_id, event_id, event_type, payload, channels, headers,
             created_at, payload_expires_at)
         SELECT m.id, m.app_id, m.event_id, m.event_type, m.payload,
             CASE WHEN m.channel_count IS NOT NULL
                 THEN ($6::text[])[m.channel_from + 1 : m.channel_from + m.channel_count] END,
             m.headers::jsonb, m.created, m.expires
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $7::int[],
             $8::int[], $9::text[], $10::timestamptz[], $11::timestamptz[]) WITH ORDINALITY
             AS m (id, app_id, event_id, event_type, payload, channel_from, channel_count,
                   headers, created, expires, n)
         WHERE EXISTS (SELECT 1 FROM app WHERE app.id = m.app_id)
         ORDER BY m.n
         ON CONFLICT DO NOTHING RETURNING id",
        &[
            &ids,
            &apps,
            &event_ids,
            &event_types,
            &payloads,
            &channels,
            &channel_from,
            &channel_count,
            &headers,
            &created,
            &expires,
        ],
    )
    .await
    .map_err(storage)
}

#[async_trait]
impl MessageStore for PostgresStore {
    async fn create_message(&self, new: NewMessage) -> Result<CreatedMessage> {
        let leasing = leasing(std::slice::from_ref(&new));
        let Inserted { endpoints, leased } = self.creates().submit(new).await?;
        let leased = self.leased_jobs(leased, &leasing);
        Ok(CreatedMessage { endpoints, leased })
    }

    async fn get_message(&self, app: &AppId, key: &str) -> Result<Message> {
        let db = self.client().await?;
        let column = key_column(MessageId::is_id(key), "event_id");
        let sql = format!(
            "SELECT {} FROM message WHERE message.app_id = $1 AND message.{column} = $2",
            rows::MESSAGE_COLUMNS
        );
        let row = query_opt(&db, &sql, &[&app.as_str(), &key])
            .await
            .map_err(storage)?;
        found(row, "message", rows::message)
    }

    async fn list_messages(
        &self,
        app: &AppId,
        filter: &MessageFilter,
        query: &ListQuery,
    ) -> Result<Page<Message>> {
        let db = self.client().await?;
        Select::new(format!(
            "SELECT {} FROM message WHERE TRUE",
            rows::MESSAGE_COLUMNS
        ))
        .and("message.app_id = ?", app.to_string())
        .and_message_filter(&filter.channel, &filter.event_types)
        .page(&db, "message.id", query, rows::message, |m| {
            m.id.to_string()
        })
        .await
    }

    async fn expunge_message(&self, app: &AppId, id: &MessageId) -> Result<()> {
        let mut db = self.client().await?;
        let tx = db.transaction().await.map_err(storage)?;
        let rows = execute(
            &tx,
            "UPDATE message SET payload = NULL WHERE app_id = $1 AND id = $2",
            &[&app.as_str(), &id.as_str()],
        )
        .await
        .map_err(storage)?;
        changed(rows, "message")?;
        // Queued deliveries cannot go out without their payload.
        execute(
            &tx,
            "UPDATE destination SET status = $2, next_attempt = NULL
             WHERE msg_id = $1 AND next_attempt IS NOT NULL AND lease_until IS NULL",
            &[&id.as_str(), &code(MessageStatus::Fail.code())],
        )
        .await
        .map_err(storage)?;
        tx.commit().await.map_err(storage)
    }

    async fn expire_payloads(&self, now: DateTime<Utc>) -> Result<u64> {
        // One batch per statement: the payloads go and, as expunge does, their queued
        // deliveries fail (they cannot go out without them).
        let statement = format!(
            "WITH expiring AS (
                 SELECT id FROM message
                 WHERE payload_expires_at < $1 AND payload IS NOT NULL
                 LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED),
             failed AS (
                 UPDATE destination SET status = {fail}, next_attempt = NULL
                 FROM expiring
                 WHERE destination.msg_id = expiring.id
                   AND destination.next_attempt IS NOT NULL
                   AND destination.lease_until IS NULL)
             UPDATE message SET payload = NULL FROM expiring WHERE message.id = expiring.id",
            fail = MessageStatus::Fail.code()
        );
        self.in_turn(&statement, now).await
    }

    async fn requeue(
        &self,
        app: &AppId,
        msg: &MessageId,
        endpoint: &EndpointId,
        trigger: TriggerType,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut db = self.client().await?;
        let tx = db.transaction().await.map_err(storage)?;
        // A delivery still on its schedule is simply brought forward; a finished one gets
        // one more attempt of the given trigger.
        let rows = execute(
            &tx,
            "UPDATE destination SET
                 trigger_type = CASE WHEN next_attempt IS NULL OR lease_until IS NOT NULL
                                     THEN $4 ELSE trigger_type END,
                 requeued = lease_until IS NOT NULL,
                 status = $5, next_attempt = $6, updated_at = $6
             WHERE app_id = $1 AND msg_id = $2 AND endpoint_id = $3",
            &[
                &app.as_str(),
                &msg.as_str(),
                &endpoint.as_str(),
                &code(trigger.code()),
                &code(MessageStatus::Sending.code()),
                &ms(now),
            ],
        )
        .await
        .map_err(storage)?;
        changed(rows, "message destination")?;
        tx.commit().await.map_err(storage)?;
        self.announce_due();
        Ok(())
    }

    async fn recover(
        &self,
        app: &AppId,
        endpoint: &EndpointId,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let mut db = self.client().await?;
        let tx = db.transaction().await.map_err(storage)?;
        let rows = execute(
            &tx,
            "UPDATE destination SET trigger_type = $5, status = $6, next_attempt = $7,
                 updated_at = $7
             WHERE app_id = $1 AND endpoint_id = $2 AND status = $8
               AND next_attempt IS NULL
               AND msg_created_at >= $3 AND msg_created_at <= $4
               AND EXISTS (SELECT 1 FROM message
                           WHERE message.id = destination.msg_id
                             AND message.payload IS NOT NULL)",
            &[
                &app.as_str(),
                &endpoint.as_str(),
                &ms(since),
                &ms(until),
                &code(TriggerType::Manual.code()),
                &code(MessageStatus::Sending.code()),
                &ms(now),
                &code(MessageStatus::Fail.code()),
            ],
        )
        .await
        .map_err(storage)?;
        tx.commit().await.map_err(storage)?;
        if rows > 0 {
            self.announce_due();
        }
        Ok(rows)
    }

    async fn get_destination(
        &self,
        app: &AppId,
        msg: &MessageId,
        endpoint: &EndpointId,
    ) -> Result<Destination> {
        let db = self.client().await?;
        let sql = format!(
            "SELECT {} FROM destination
             WHERE destination.app_id = $1 AND destination.msg_id = $2
               AND destination.endpoint_id = $3",
            rows::DESTINATION_COLUMNS
        );
        let row = query_opt(
            &db,
            &sql,
            &[&app.as_str(), &msg.as_str(), &endpoint.as_str()],
        )
        .await
        .map_err(storage)?;
        found(row, "message destination", rows::destination)
    }

    async fn list_destinations(
        &self,
        app: &AppId,
        msg: &MessageId,
        query: &ListQuery,
    ) -> Result<Page<(Destination, Endpoint)>> {
        let db = self.client().await?;
        Select::new(format!(
            "SELECT {}, {} FROM destination
             JOIN endpoint ON endpoint.id = destination.endpoint_id WHERE TRUE",
            rows::DESTINATION_COLUMNS,
            rows::ENDPOINT_COLUMNS
        ))
        .and("destination.app_id = ?", app.to_string())
        .and("destination.msg_id = ?", msg.to_string())
        .page(
            &db,
            "endpoint.id",
            query,
            |c| Ok((rows::destination(c)?, rows::endpoint(c)?)),
            |(_, endpoint)| endpoint.id.to_string(),
        )
        .await
    }

    async fn list_endpoint_messages(
        &self,
        app: &AppId,
        endpoint: &EndpointId,
        status: Option<MessageStatus>,
        filter: &MessageFilter,
        query: &ListQuery,
    ) -> Result<Page<(Message, Destination)>> {
        let db = self.client().await?;
        let mut select = Select::new(format!(
            "SELECT {}, {} FROM destination
             JOIN message ON message.id = destination.msg_id WHERE TRUE",
            rows::MESSAGE_COLUMNS,
            rows::DESTINATION_COLUMNS
        ))
        .and("destination.app_id = ?", app.to_string())
        .and("destination.endpoint_id = ?", endpoint.to_string())
        .and_message_filter(&filter.channel, &filter.event_types);
        if let Some(status) = status {
            select = select.and("destination.status = ?", code(status.code()));
        }
        select
            .page(
                &db,
                "message.id",
                query,
                |c| Ok((rows::message(c)?, rows::destination(c)?)),
                |(message, _)| message.id.to_string(),
            )
            .await
    }

    async fn list_attempts(
        &self,
        app: &AppId,
        filter: &AttemptFilter,
        query: &ListQuery,
    ) -> Result<Page<Attempt>> {
        let db = self.client().await?;
        let mut select = Select::new(format!(
            "SELECT {} FROM attempt JOIN message ON message.id = attempt.msg_id WHERE TRUE",
            rows::ATTEMPT_COLUMNS
        ))
        .and("attempt.app_id = ?", app.to_string())
        .and_message_filter(&filter.channel, &filter.event_types);
        if let Some(endpoint) = &filter.endpoint_id {
            select = select.and("attempt.endpoint_id = ?", endpoint.to_string());
        }
        if let Some(msg) = &filter.msg_id {
            select = select.and("attempt.msg_id = ?", msg.to_string());
        }
        if let Some(status) = filter.status {
            select = select.and("attempt.status = ?", code(status.code()));
        }
        if let Some(class) = filter.status_code_class {
            select = select.and("attempt.response_status_code >= ?", class).and(
                "attempt.response_status_code <= ?",
                class.saturating_add(99),
            );
        }
        select
            .page(&db, "attempt.id", query, rows::attempt, |a| {
                a.id.to_string()
            })
            .await
    }

    async fn get_attempt(&self, app: &AppId, msg: &MessageId, id: &AttemptId) -> Result<Attempt> {
        let db = self.client().await?;
        let sql = format!(
            "SELECT {} FROM attempt
             WHERE attempt.app_id = $1 AND attempt.msg_id = $2 AND attempt.id = $3",
            rows::ATTEMPT_COLUMNS
        );
        let row = query_opt(&db, &sql, &[&app.as_str(), &msg.as_str(), &id.as_str()])
            .await
            .map_err(storage)?;
        found(row, "message attempt", rows::attempt)
    }

    async fn expunge_attempt(&self, app: &AppId, msg: &MessageId, id: &AttemptId) -> Result<()> {
        let db = self.client().await?;
        let rows = execute(
            &db,
            "UPDATE attempt SET response = NULL WHERE app_id = $1 AND msg_id = $2 AND id = $3",
            &[&app.as_str(), &msg.as_str(), &id.as_str()],
        )
        .await
        .map_err(storage)?;
        changed(rows, "message attempt")
    }
}
