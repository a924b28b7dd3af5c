//! Messages, their deliveries and attempts, resend and recover: `impl MessageStore`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use hookline_core::id::{AppId, AttemptId, EndpointId, MessageId};
use hookline_core::model::{Attempt, Destination, Endpoint, Message, MessageStatus, TriggerType};
use hookline_core::page::{ListQuery, Page};
use hookline_core::store::{
    AttemptFilter, CreatedMessage, MessageFilter, MessageStore, NewMessage,
};
use hookline_core::{Code, Error, Result};

use super::idempotency::claim_idempotent;
use super::{Select, changed, execute, found, key_column, notify_due, query_opt, query_rows};
use crate::PostgresStore;
use crate::error::storage;
use crate::rows::{self, code, ms, read};

/// Stores a message, one destination per endpoint it is for, and its idempotency record,
/// and returns those endpoints: what [`MessageStore::create_message`] does (in a group
/// commit, [`crate::group`]), and [`IngestStore::ingest`] and the job tracker for the
/// messages they make. The caller notifies and commits.
///
/// A conflict (the idempotency key or the `eventId` taken) is the inner `Err`: it is
/// found without a failing statement, so the transaction goes on for the other messages
/// it holds, and this one leaves nothing behind. The outer `Err` is a statement's failure.
///
/// [`IngestStore::ingest`]: hookline_core::store::IngestStore::ingest
pub(crate) async fn insert_message(
    db: &impl GenericClient,
    new: &NewMessage,
) -> Result<Result<Vec<EndpointId>>> {
    let message = &new.message;
    let created = ms(message.created_at);
    if let Some(record) = &new.idempotency {
        match claim_idempotent(db, record, message.created_at, false).await {
            Ok(()) => {}
            Err(error) if error.code() == Code::IdempotencyConflict => return Ok(Err(error)),
            Err(error) => return Err(error),
        }
    }
    let stored = query_opt(
        db,
        "INSERT INTO message (id, app_id, event_id, event_type, payload, channels, headers,
             created_at, payload_expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT DO NOTHING RETURNING 1",
        &[
            &message.id.as_str(),
            &message.app_id.as_str(),
            &message.event_id,
            &message.event_type,
            &message.payload,
            &message.channels,
            &rows::message_headers(&message.headers),
            &created,
            &new.payload_expires_at.map(ms),
        ],
    )
    .await
    .map_err(storage)?;
    if stored.is_none() {
        if let Some(record) = &new.idempotency {
            execute(db, "DELETE FROM idempotency WHERE key = $1", &[&record.key])
                .await
                .map_err(storage)?;
        }
        return Ok(Err(Error::conflict(
            "a message with this eventId already exists",
        )));
    }

    // Fan-out follows the one rule in `Endpoint::wants`, as in every backend.
    let sql = format!(
        "SELECT {} FROM endpoint WHERE endpoint.app_id = $1",
        rows::ENDPOINT_COLUMNS
    );
    let endpoints = query_rows(db, &sql, &[&message.app_id.as_str()])
        .await
        .map_err(storage)?;
    let mut targets = Vec::new();
    for row in &endpoints {
        let endpoint = read(row, rows::endpoint)?;
        let wanted = match &new.only_endpoint {
            Some(only) => &endpoint.id == only,
            None => endpoint.wants(&message.event_type, message.channels.as_deref()),
        };
        if wanted {
            targets.push(endpoint.id);
        }
    }

    if !targets.is_empty() {
        let ids: Vec<&str> = targets.iter().map(EndpointId::as_str).collect();
        execute(
            db,
            "INSERT INTO destination (msg_id, endpoint_id, app_id, status, next_attempt,
                 attempts, trigger_type, msg_created_at, updated_at)
             SELECT $1, endpoint_id, $3, $4, $5, 0, 0, $5, $5
             FROM unnest($2::text[]) AS endpoint_id",
            &[
                &message.id.as_str(),
                &ids,
                &message.app_id.as_str(),
                &code(MessageStatus::Sending.code()),
                &created,
            ],
        )
        .await
        .map_err(storage)?;
    }
    Ok(Ok(targets))
}

#[async_trait]
impl MessageStore for PostgresStore {
    async fn create_message(&self, new: NewMessage) -> Result<CreatedMessage> {
        self.creates().submit(new).await
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
        notify_due(&tx).await?;
        tx.commit().await.map_err(storage)
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
        if rows > 0 {
            notify_due(&tx).await?;
        }
        tx.commit().await.map_err(storage)?;
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
