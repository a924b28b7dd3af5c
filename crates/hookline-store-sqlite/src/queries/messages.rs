//! Messages, their deliveries and attempts, resend and recover: `impl MessageStore`.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hookline_core::id::{AppId, AttemptId, EndpointId, MessageId};
use hookline_core::model::{Attempt, Destination, Endpoint, Message, MessageStatus, TriggerType};
use hookline_core::page::{ListQuery, Page};
use hookline_core::store::{
    AttemptFilter, CreatedMessage, MessageFilter, MessageStore, NewMessage,
};
use hookline_core::{Error, Result};
use rusqlite::{Connection, params};

use super::delivery::leased_jobs;
use super::idempotency::claim_idempotent;
use super::{Select, all, changed, key_column, not_found, one};
use crate::SqliteStore;
use crate::rows::{self, classify, headers_json, is_foreign_key_violation, millis, opt_json};

/// Stores a message, one destination per endpoint it is for, and its idempotency record:
/// what [`MessageStore::create_message`] does, and [`IngestStore::ingest`] for each
/// forwarding message.
///
/// [`IngestStore::ingest`]: hookline_core::store::IngestStore::ingest
pub(super) fn insert_message(conn: &Connection, new: &NewMessage) -> Result<Inserted> {
    let message = &new.message;
    let created = millis(message.created_at);
    conn.prepare_cached(
        "INSERT INTO message (id, app_id, event_id, event_type, payload, channels, headers,
             created_at, payload_expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            message.id.as_str(),
            message.app_id.as_str(),
            message.event_id,
            message.event_type,
            message.payload,
            opt_json(&message.channels),
            headers_json(&message.headers),
            created,
            new.payload_expires_at.map(millis),
        ])
    })
    .map_err(|e| {
        // The message's one foreign key is its application.
        if is_foreign_key_violation(&e) {
            return Error::NotFound("application");
        }
        match classify(e, "a message") {
            Error::Conflict { .. } => Error::conflict("a message with this eventId already exists"),
            other => other,
        }
    })?;

    // Only what matching needs: this runs on the writer thread for every message.
    let endpoints = all(
        conn,
        "SELECT id, disabled, event_types, channels FROM endpoint WHERE app_id = ?1",
        [message.app_id.as_str()],
        rows::endpoint_filter,
    )?;
    let targets: Vec<(EndpointId, bool)> = endpoints
        .into_iter()
        .filter(|filter| match &new.only_endpoint {
            Some(only) => &filter.id == only,
            None => filter.wants(&message.event_type, message.channels.as_deref()),
        })
        .map(|filter| (filter.id, filter.disabled))
        .collect();
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO destination (msg_id, endpoint_id, app_id, status, next_attempt,
                 attempts, trigger_type, lease_owner, lease_until, msg_created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, COALESCE(?7, ?5), 0, 0, ?6, ?7, ?5, ?5)",
        )
        .map_err(Error::storage)?;
    let mut leased = Vec::new();
    for (endpoint, disabled) in &targets {
        // Leased as a claim leaves a row: due again when the lease ends.
        let lease = new
            .lease
            .as_ref()
            .and_then(|lease| lease.takes(*disabled, leased.len()));
        insert
            .execute(params![
                message.id.as_str(),
                endpoint.as_str(),
                message.app_id.as_str(),
                MessageStatus::Sending.code(),
                created,
                lease.map(|lease| lease.owner.as_str()),
                lease.map(|lease| millis(lease.until)),
            ])
            .map_err(Error::storage)?;
        if let Some(lease) = lease {
            leased.push(lease.destination(message, endpoint));
        }
    }
    if let Some(record) = &new.idempotency {
        claim_idempotent(conn, record, new.message.created_at, false)?;
    }
    Ok(Inserted {
        endpoints: targets.into_iter().map(|(endpoint, _)| endpoint).collect(),
        leased,
    })
}

/// What [`insert_message`] stored: the endpoints the message is for, and the deliveries
/// it leased ([`NewMessage::lease`]).
pub(super) struct Inserted {
    pub endpoints: Vec<EndpointId>,
    pub leased: Vec<Destination>,
}

/// Payloads one write of [`MessageStore::expire_payloads`] removes.
const EXPIRE_BATCH: usize = 1_000;

#[async_trait]
impl MessageStore for SqliteStore {
    async fn create_message(&self, new: NewMessage) -> Result<CreatedMessage> {
        let cache = Arc::clone(&self.inner.endpoints);
        let generation = cache.generation();
        let sealer = self.sealer().clone();
        let created = self
            .write(move |conn| {
                let Inserted { endpoints, leased } = insert_message(conn, &new)?;
                let leased = leased_jobs(conn, leased, Arc::new(new.message), &cache, &sealer);
                Ok(CreatedMessage { endpoints, leased })
            })
            .await?;
        let endpoints = created.leased.iter().map(|job| &job.endpoint);
        self.inner.endpoints.put_committed(generation, endpoints);
        Ok(created)
    }

    async fn get_message(&self, app: &AppId, key: &str) -> Result<Message> {
        let (app, key) = (app.clone(), key.to_owned());
        self.lookup(move |conn| {
            let column = key_column(MessageId::is_id(&key), "event_id");
            let sql = format!(
                "SELECT {} FROM message WHERE app_id = ?1 AND {column} = ?2",
                rows::MESSAGE_COLUMNS
            );
            one(conn, &sql, params![app.as_str(), key], rows::message)
                .and_then(not_found("message"))
        })
        .await
    }

    async fn list_messages(
        &self,
        app: &AppId,
        filter: &MessageFilter,
        query: &ListQuery,
    ) -> Result<Page<Message>> {
        let (app, filter, query) = (app.clone(), filter.clone(), query.clone());
        self.read(move |conn| {
            Select::new(format!(
                "SELECT {} FROM message WHERE 1 = 1",
                rows::MESSAGE_COLUMNS
            ))
            .and("message.app_id = ?", app.into_string())
            .and_message_filter(&filter.channel, &filter.event_types)
            .page(conn, "message.id", &query, rows::message, |m| {
                m.id.to_string()
            })
        })
        .await
    }

    async fn expunge_message(&self, app: &AppId, id: &MessageId) -> Result<()> {
        let (app, id) = (app.clone(), id.clone());
        self.write(move |conn| {
            let rows = conn
                .execute(
                    "UPDATE message SET payload = NULL WHERE app_id = ?1 AND id = ?2",
                    [app.as_str(), id.as_str()],
                )
                .map_err(Error::storage)?;
            changed(rows, "message")?;
            // Queued deliveries cannot go out without their payload.
            conn.execute(
                "UPDATE destination SET status = ?2, next_attempt = NULL
                 WHERE msg_id = ?1 AND next_attempt IS NOT NULL AND lease_until IS NULL",
                params![id.as_str(), MessageStatus::Fail.code()],
            )
            .map_err(Error::storage)?;
            Ok(())
        })
        .await
    }

    async fn expire_payloads(&self, now: DateTime<Utc>) -> Result<u64> {
        let now = millis(now);
        let mut expired = 0;
        // A batch per write, as purges go, so that other writes are not held up.
        loop {
            let batch = self
                .write(move |conn| {
                    let ids = all(
                        conn,
                        "UPDATE message SET payload = NULL
                         WHERE rowid IN (
                             SELECT rowid FROM message
                             WHERE payload_expires_at < ?1 AND payload IS NOT NULL
                             LIMIT ?2)
                         RETURNING id",
                        params![now, EXPIRE_BATCH as i64],
                        |row| row.get::<_, String>(0),
                    )?;
                    // As expunge does: queued deliveries cannot go out without it.
                    let mut fail = conn
                        .prepare_cached(
                            "UPDATE destination SET status = ?2, next_attempt = NULL
                             WHERE msg_id = ?1 AND next_attempt IS NOT NULL
                               AND lease_until IS NULL",
                        )
                        .map_err(Error::storage)?;
                    for id in &ids {
                        fail.execute(params![id, MessageStatus::Fail.code()])
                            .map_err(Error::storage)?;
                    }
                    Ok(ids.len())
                })
                .await?;
            expired += batch as u64;
            if batch < EXPIRE_BATCH {
                return Ok(expired);
            }
        }
    }

    async fn requeue(
        &self,
        app: &AppId,
        msg: &MessageId,
        endpoint: &EndpointId,
        trigger: TriggerType,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (app, msg, endpoint) = (app.clone(), msg.clone(), endpoint.clone());
        let now = millis(now);
        self.write(move |conn| {
            // A delivery still on its schedule is simply brought forward; a finished one
            // gets one more attempt of the given trigger.
            let rows = conn
                .prepare_cached(
                    "UPDATE destination SET
                         trigger_type = CASE WHEN next_attempt IS NULL OR lease_until IS NOT NULL
                                             THEN ?4 ELSE trigger_type END,
                         requeued = CASE WHEN lease_until IS NOT NULL THEN 1 ELSE 0 END,
                         status = ?5, next_attempt = ?6, updated_at = ?6
                     WHERE app_id = ?1 AND msg_id = ?2 AND endpoint_id = ?3",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        app.as_str(),
                        msg.as_str(),
                        endpoint.as_str(),
                        trigger.code(),
                        MessageStatus::Sending.code(),
                        now,
                    ])
                })
                .map_err(Error::storage)?;
            changed(rows, "message destination")
        })
        .await
    }

    async fn recover(
        &self,
        app: &AppId,
        endpoint: &EndpointId,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let (app, endpoint) = (app.clone(), endpoint.clone());
        let now = millis(now);
        self.write(move |conn| {
            let rows = conn
                .prepare_cached(
                    "UPDATE destination SET trigger_type = ?5, status = ?6, next_attempt = ?7,
                         updated_at = ?7
                     WHERE app_id = ?1 AND endpoint_id = ?2 AND status = ?8
                       AND next_attempt IS NULL
                       AND msg_created_at >= ?3 AND msg_created_at <= ?4
                       AND EXISTS (SELECT 1 FROM message
                                   WHERE message.id = destination.msg_id
                                     AND message.payload IS NOT NULL)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        app.as_str(),
                        endpoint.as_str(),
                        millis(since),
                        millis(until),
                        TriggerType::Manual.code(),
                        MessageStatus::Sending.code(),
                        now,
                        MessageStatus::Fail.code(),
                    ])
                })
                .map_err(Error::storage)?;
            Ok(rows as u64)
        })
        .await
    }

    async fn get_destination(
        &self,
        app: &AppId,
        msg: &MessageId,
        endpoint: &EndpointId,
    ) -> Result<Destination> {
        let (app, msg, endpoint) = (app.clone(), msg.clone(), endpoint.clone());
        self.read(move |conn| {
            let sql = format!(
                "SELECT {} FROM destination WHERE app_id = ?1 AND msg_id = ?2 AND endpoint_id = ?3",
                rows::DESTINATION_COLUMNS
            );
            one(
                conn,
                &sql,
                params![app.as_str(), msg.as_str(), endpoint.as_str()],
                |row| rows::destination_at(row, 0),
            )
            .and_then(not_found("message destination"))
        })
        .await
    }

    async fn list_destinations(
        &self,
        app: &AppId,
        msg: &MessageId,
        query: &ListQuery,
    ) -> Result<Page<(Destination, Endpoint)>> {
        let (app, msg, query) = (app.clone(), msg.clone(), query.clone());
        self.read(move |conn| {
            Select::new(format!(
                "SELECT {}, {} FROM destination
                 JOIN endpoint ON endpoint.id = destination.endpoint_id WHERE 1 = 1",
                rows::DESTINATION_COLUMNS,
                rows::ENDPOINT_COLUMNS
            ))
            .and("destination.app_id = ?", app.into_string())
            .and("destination.msg_id = ?", msg.into_string())
            .page(
                conn,
                "endpoint.id",
                &query,
                |row| Ok((rows::destination_at(row, 0)?, rows::endpoint_at(row, 8)?)),
                |(_, endpoint)| endpoint.id.to_string(),
            )
        })
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
        let (app, endpoint) = (app.clone(), endpoint.clone());
        let (filter, query) = (filter.clone(), query.clone());
        self.read(move |conn| {
            let mut select = Select::new(format!(
                "SELECT {}, {} FROM destination
                 JOIN message ON message.id = destination.msg_id WHERE 1 = 1",
                rows::MESSAGE_COLUMNS,
                rows::DESTINATION_COLUMNS
            ))
            .and("destination.app_id = ?", app.into_string())
            .and("destination.endpoint_id = ?", endpoint.into_string())
            .and_message_filter(&filter.channel, &filter.event_types);
            if let Some(status) = status {
                select = select.and("destination.status = ?", status.code());
            }
            select.page(
                conn,
                "message.id",
                &query,
                |row| Ok((rows::message_at(row, 0)?, rows::destination_at(row, 8)?)),
                |(message, _)| message.id.to_string(),
            )
        })
        .await
    }

    async fn list_attempts(
        &self,
        app: &AppId,
        filter: &AttemptFilter,
        query: &ListQuery,
    ) -> Result<Page<Attempt>> {
        let (app, filter, query) = (app.clone(), filter.clone(), query.clone());
        self.read(move |conn| {
            let mut select = Select::new(format!(
                "SELECT {} FROM attempt JOIN message ON message.id = attempt.msg_id WHERE 1 = 1",
                rows::ATTEMPT_COLUMNS
            ))
            .and("attempt.app_id = ?", app.into_string())
            .and_message_filter(&filter.channel, &filter.event_types);
            if let Some(endpoint) = &filter.endpoint_id {
                select = select.and("attempt.endpoint_id = ?", endpoint.to_string());
            }
            if let Some(msg) = &filter.msg_id {
                select = select.and("attempt.msg_id = ?", msg.to_string());
            }
            if let Some(status) = filter.status {
                select = select.and("attempt.status = ?", status.code());
            }
            if let Some(class) = filter.status_code_class {
                let low = i64::from(class);
                select = select
                    .and("attempt.response_status_code >= ?", low)
                    .and("attempt.response_status_code <= ?", low + 99);
            }
            select.page(conn, "attempt.id", &query, rows::attempt, |a| {
                a.id.to_string()
            })
        })
        .await
    }

    async fn get_attempt(&self, app: &AppId, msg: &MessageId, id: &AttemptId) -> Result<Attempt> {
        let (app, msg, id) = (app.clone(), msg.clone(), id.clone());
        self.read(move |conn| {
            let sql = format!(
                "SELECT {} FROM attempt WHERE app_id = ?1 AND msg_id = ?2 AND id = ?3",
                rows::ATTEMPT_COLUMNS
            );
            one(
                conn,
                &sql,
                params![app.as_str(), msg.as_str(), id.as_str()],
                rows::attempt,
            )
            .and_then(not_found("message attempt"))
        })
        .await
    }

    async fn expunge_attempt(&self, app: &AppId, msg: &MessageId, id: &AttemptId) -> Result<()> {
        let (app, msg, id) = (app.clone(), msg.clone(), id.clone());
        self.write(move |conn| {
            let rows = conn
                .execute(
                    "UPDATE attempt SET response = NULL
                     WHERE app_id = ?1 AND msg_id = ?2 AND id = ?3",
                    [app.as_str(), msg.as_str(), id.as_str()],
                )
                .map_err(Error::storage)?;
            changed(rows, "message attempt")
        })
        .await
    }
}
