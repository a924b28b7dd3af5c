//! The SQL behind each [`Store`] operation, mirroring the SQLite store statement for
//! statement (except that a claim reads its jobs in the same statement that leases them).
//! Writes of more than one statement run in a transaction; a write that queues due work
//! also notifies `hookline_due` in that transaction.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use hookline_core::id::{AppId, AttemptId, EndpointId, IngestRequestId, MessageId, SourceId};
use hookline_core::ingest::{IngestRequest, IngestedRequest, NewIngestRequest, Source, Verdict};
use hookline_core::model::{
    Application, Attempt, Destination, Endpoint, EndpointStats, EventType, IdempotencyRecord,
    IdempotentResponse, Message, MessageStatus, Token, TriggerType,
};
use hookline_core::page::{ListQuery, Order, Page};
use hookline_core::store::{
    AttemptFilter, AttemptOutcome, CreatedMessage, DeliveryJob, MessageFilter, NewMessage,
};
use hookline_core::{Error, Result, Store};
use tokio_postgres::Row;
use tokio_postgres::types::{Json, ToSql};

use crate::PostgresStore;
use crate::error::{duplicate, or_conflict, storage};
use crate::rows::{self, Columns, code, ms, read};

/// First key of the advisory lock that makes the dedupe check of one source and dedupe
/// key wait for a request with the same key still in flight; the second is their hash.
const DEDUPE_LOCK: i32 = 0x686b_6464; // "hkdd"
/// How many rows one statement of a purge deletes: a purge of millions of rows goes in
/// steps, each its own short transaction.
const PURGE_BATCH: i64 = 10_000;
/// First key of the advisory lock a node holds while it purges expired rows; the
/// second is the hash of the schema, so that schemas sharing a database do not wait on
/// each other.
const PURGE_LOCK: i32 = 0x686b_7072; // "hkpr"

/// A parameter of a query built at run time.
type Param = Box<dyn ToSql + Sync + Send>;

/// A query under construction: a `SELECT … WHERE` prefix and its parameters.
struct Select {
    sql: String,
    params: Vec<Param>,
}

impl Select {
    fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    /// Adds `AND condition`, where the one `?` in `condition` stands for `value`.
    fn and(mut self, condition: &str, value: impl ToSql + Sync + Send + 'static) -> Self {
        self.params.push(Box::new(value));
        let placeholder = format!("${}", self.params.len());
        self.sql.push_str(" AND ");
        self.sql.push_str(&condition.replacen('?', &placeholder, 1));
        self
    }

    fn and_channel(self, column: &str, channel: &Option<String>) -> Self {
        match channel {
            Some(channel) => self.and(&format!("? = ANY ({column})"), channel.clone()),
            None => self,
        }
    }

    fn and_in(self, column: &str, values: &Option<Vec<String>>) -> Self {
        match values {
            Some(values) => self.and(&format!("{column} = ANY (?)"), values.clone()),
            None => self,
        }
    }

    /// Runs the query as one page of `query`, sorted and bounded on `key_column`.
    async fn page<T>(
        mut self,
        db: &impl GenericClient,
        key_column: &str,
        query: &ListQuery,
        read_row: impl Fn(&mut Columns<'_>) -> Result<T>,
        key: impl Fn(&T) -> String,
    ) -> Result<Page<T>> {
        if let Some((bound, ascending)) = query.bound() {
            let op = if ascending { ">" } else { "<" };
            self = self.and(&format!("{key_column} {op} ?"), bound.to_owned());
        }
        let direction = match query.scan_order() {
            Order::Ascending => "ASC",
            Order::Descending => "DESC",
        };
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX - 1) + 1;
        self.params.push(Box::new(limit));
        self.sql.push_str(&format!(
            " ORDER BY {key_column} {direction} LIMIT ${}",
            self.params.len()
        ));
        let params: Vec<&(dyn ToSql + Sync)> = self
            .params
            .iter()
            .map(|param| param.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = query_rows(db, &self.sql, &params)
            .await
            .map_err(storage)?
            .iter()
            .map(|row| read(row, &read_row))
            .collect::<Result<Vec<T>>>()?;
        Ok(Page::from_scan(rows, query, key))
    }
}

async fn query_rows(
    db: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let statement = db.prepare_cached(sql).await?;
    db.query(&statement, params).await
}

async fn query_opt(
    db: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, tokio_postgres::Error> {
    let statement = db.prepare_cached(sql).await?;
    db.query_opt(&statement, params).await
}

async fn execute(
    db: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let statement = db.prepare_cached(sql).await?;
    db.execute(&statement, params).await
}

/// Reads the one row of a lookup, or says which resource was not found.
fn found<T>(
    row: Option<Row>,
    what: &'static str,
    read_row: impl FnOnce(&mut Columns<'_>) -> Result<T>,
) -> Result<T> {
    match row {
        Some(row) => read(&row, read_row),
        None => Err(Error::NotFound(what)),
    }
}

fn changed(rows: u64, what: &'static str) -> Result<()> {
    if rows == 0 {
        Err(Error::NotFound(what))
    } else {
        Ok(())
    }
}

/// The column a key is looked up by: a uid never carries the id prefix.
fn key_column(key: &str, prefix: &str, uid_column: &'static str) -> &'static str {
    if key.starts_with(prefix) {
        "id"
    } else {
        uid_column
    }
}

/// Tells listening nodes that due work is committed, once the surrounding transaction is.
async fn notify_due(db: &impl GenericClient) -> Result<()> {
    execute(
        db,
        "SELECT pg_notify('hookline_due', current_schema())",
        &[],
    )
    .await
    .map_err(storage)?;
    Ok(())
}

/// An endpoint's values in the stored types, to bind to an insert or an update.
struct EndpointValues<'a> {
    endpoint: &'a Endpoint,
    throttle_rate: Option<i32>,
    metadata: Json<&'a std::collections::BTreeMap<String, String>>,
    headers: Json<&'a std::collections::BTreeMap<String, String>>,
    secrets: Json<Vec<hookline_core::model::EndpointSecret>>,
    failing_since: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl<'a> EndpointValues<'a> {
    fn new(endpoint: &'a Endpoint) -> Self {
        Self {
            endpoint,
            throttle_rate: endpoint.throttle_rate.map(i32::from),
            metadata: Json(&endpoint.metadata),
            headers: Json(&endpoint.headers),
            secrets: rows::secrets(&endpoint.secrets),
            failing_since: endpoint.failing_since.map(ms),
            created_at: ms(endpoint.created_at),
            updated_at: ms(endpoint.updated_at),
        }
    }
}

impl PostgresStore {
    /// Runs `delete` (parameters: a time, a batch size) one batch per statement until a
    /// batch comes up short; returns how many rows went. One node purges at a time: the
    /// others find the lock taken and leave it to that one (and get 0).
    async fn purge(&self, delete: &str, before: DateTime<Utc>) -> Result<u64> {
        let db = self.client().await?;
        let locked: bool = query_opt(
            &db,
            "SELECT pg_try_advisory_lock($1, hashtext(current_schema()::text))",
            &[&PURGE_LOCK],
        )
        .await
        .map_err(storage)?
        .is_some_and(|row| row.get(0));
        if !locked {
            return Ok(0);
        }
        let before = ms(before);
        let mut purged = 0;
        let result = loop {
            let deleted = execute(&db, delete, &[&before, &PURGE_BATCH])
                .await
                .map_err(storage);
            match deleted {
                Ok(deleted) if deleted == PURGE_BATCH as u64 => purged += deleted,
                Ok(deleted) => break Ok(purged + deleted),
                Err(error) => break Err(error),
            }
        };
        // A session lock outlives the statement: give it back before the connection is.
        execute(
            &db,
            "SELECT pg_advisory_unlock($1, hashtext(current_schema()::text))",
            &[&PURGE_LOCK],
        )
        .await
        .map_err(storage)?;
        result
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_app(&self, app: &Application) -> Result<()> {
        let db = self.client().await?;
        insert_app(&db, app).await
    }

    async fn get_app(&self, key: &str) -> Result<Application> {
        let db = self.client().await?;
        let column = key_column(key, AppId::PREFIX, "uid");
        let sql = format!(
            "SELECT {} FROM app WHERE app.{column} = $1",
            rows::APP_COLUMNS
        );
        let row = query_opt(&db, &sql, &[&key]).await.map_err(storage)?;
        found(row, "application", rows::app)
    }

    async fn list_apps(&self, query: &ListQuery) -> Result<Page<Application>> {
        let db = self.client().await?;
        // A source's hidden application is reached through the source only.
        Select::new(format!(
            "SELECT {} FROM app
             WHERE NOT EXISTS (SELECT 1 FROM source WHERE source.app_id = app.id)",
            rows::APP_COLUMNS
        ))
        .page(&db, "app.id", query, rows::app, |app| app.id.to_string())
        .await
    }

    async fn update_app(&self, app: &Application) -> Result<()> {
        let db = self.client().await?;
        let rows = execute(
            &db,
            "UPDATE app SET uid = $2, name = $3, throttle_rate = $4, metadata = $5,
                 updated_at = $6
             WHERE id = $1",
            &[
                &app.id.as_str(),
                &app.uid,
                &app.name,
                &app.throttle_rate.map(i32::from),
                &Json(&app.metadata),
                &ms(app.updated_at),
            ],
        )
        .await
        .map_err(duplicate("an application"))?;
        changed(rows, "application")
    }

    async fn delete_app(&self, id: &AppId) -> Result<()> {
        let db = self.client().await?;
        let owned = query_opt(
            &db,
            "SELECT 1 FROM source WHERE app_id = $1",
            &[&id.as_str()],
        )
        .await
        .map_err(storage)?;
        if owned.is_some() {
            return Err(Error::conflict(
                "the application belongs to a source; delete the source instead",
            ));
        }
        delete_app_rows(&db, id).await
    }

    async fn create_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        let db = self.client().await?;
        let v = EndpointValues::new(endpoint);
        execute(
            &db,
            "INSERT INTO endpoint (id, app_id, uid, url, description, disabled, throttle_rate,
                 event_types, channels, metadata, headers, secrets, failing_since,
                 created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            &[
                &v.endpoint.id.as_str(),
                &v.endpoint.app_id.as_str(),
                &v.endpoint.uid,
                &v.endpoint.url,
                &v.endpoint.description,
                &v.endpoint.disabled,
                &v.throttle_rate,
                &v.endpoint.event_types,
                &v.endpoint.channels,
                &v.metadata,
                &v.headers,
                &v.secrets,
                &v.failing_since,
                &v.created_at,
                &v.updated_at,
            ],
        )
        .await
        .map_err(duplicate("an endpoint"))?;
        Ok(())
    }

    async fn get_endpoint(&self, app: &AppId, key: &str) -> Result<Endpoint> {
        let db = self.client().await?;
        let column = key_column(key, EndpointId::PREFIX, "uid");
        let sql = format!(
            "SELECT {} FROM endpoint WHERE endpoint.app_id = $1 AND endpoint.{column} = $2",
            rows::ENDPOINT_COLUMNS
        );
        let row = query_opt(&db, &sql, &[&app.as_str(), &key])
            .await
            .map_err(storage)?;
        found(row, "endpoint", rows::endpoint)
    }

    async fn list_endpoints(&self, app: &AppId, query: &ListQuery) -> Result<Page<Endpoint>> {
        let db = self.client().await?;
        Select::new(format!(
            "SELECT {} FROM endpoint WHERE TRUE",
            rows::ENDPOINT_COLUMNS
        ))
        .and("endpoint.app_id = ?", app.to_string())
        .page(&db, "endpoint.id", query, rows::endpoint, |e| {
            e.id.to_string()
        })
        .await
    }

    async fn update_endpoint(&self, endpoint: &Endpoint, set_disabled: bool) -> Result<()> {
        let db = self.client().await?;
        let v = EndpointValues::new(endpoint);
        let rows = execute(
            &db,
            "UPDATE endpoint SET uid = $3, url = $4, description = $5,
                 disabled = CASE WHEN $14 THEN $6 ELSE disabled END,
                 throttle_rate = $7, event_types = $8, channels = $9, metadata = $10,
                 headers = $11, secrets = $12, updated_at = $13,
                 failing_since = CASE WHEN $14 AND disabled AND NOT $6 THEN NULL
                                      ELSE failing_since END
             WHERE id = $1 AND app_id = $2",
            &[
                &v.endpoint.id.as_str(),
                &v.endpoint.app_id.as_str(),
                &v.endpoint.uid,
                &v.endpoint.url,
                &v.endpoint.description,
                &v.endpoint.disabled,
                &v.throttle_rate,
                &v.endpoint.event_types,
                &v.endpoint.channels,
                &v.metadata,
                &v.headers,
                &v.secrets,
                &v.updated_at,
                &set_disabled,
            ],
        )
        .await
        .map_err(duplicate("an endpoint"))?;
        changed(rows, "endpoint")
    }

    async fn delete_endpoint(&self, app: &AppId, id: &EndpointId) -> Result<()> {
        let db = self.client().await?;
        let rows = execute(
            &db,
            "DELETE FROM endpoint WHERE app_id = $1 AND id = $2",
            &[&app.as_str(), &id.as_str()],
        )
        .await
        .map_err(storage)?;
        changed(rows, "endpoint")
    }

    async fn endpoint_stats(
        &self,
        app: &AppId,
        endpoint: &EndpointId,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<EndpointStats> {
        let db = self.client().await?;
        let counts = query_rows(
            &db,
            "SELECT status, count(*) FROM destination
             WHERE app_id = $1 AND endpoint_id = $2
               AND msg_created_at >= $3 AND msg_created_at <= $4
             GROUP BY status",
            &[&app.as_str(), &endpoint.as_str(), &ms(since), &ms(until)],
        )
        .await
        .map_err(storage)?;
        let mut stats = EndpointStats::default();
        for row in counts {
            let (status, n): (i16, i64) = read(&row, |c| Ok((c.take()?, c.take()?)))?;
            match MessageStatus::from_code(i64::from(status)) {
                Some(MessageStatus::Success) => stats.success = n,
                Some(MessageStatus::Pending) => stats.pending = n,
                Some(MessageStatus::Sending) => stats.sending = n,
                Some(MessageStatus::Fail) | None => stats.fail += n,
            }
        }
        Ok(stats)
    }

    async fn create_event_type(&self, event_type: &EventType) -> Result<()> {
        let db = self.client().await?;
        execute(
            &db,
            "INSERT INTO event_type (name, description, archived, deprecated, schemas,
                 feature_flag, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &event_type.name,
                &event_type.description,
                &event_type.archived,
                &event_type.deprecated,
                &event_type.schemas,
                &event_type.feature_flag,
                &ms(event_type.created_at),
                &ms(event_type.updated_at),
            ],
        )
        .await
        .map_err(or_conflict(|| Error::Conflict {
            code: "event_type_exists",
            detail: "an event type with this name already exists".into(),
        }))?;
        Ok(())
    }

    async fn get_event_type(&self, name: &str) -> Result<EventType> {
        let db = self.client().await?;
        let sql = format!(
            "SELECT {} FROM event_type WHERE event_type.name = $1",
            rows::EVENT_TYPE_COLUMNS
        );
        let row = query_opt(&db, &sql, &[&name]).await.map_err(storage)?;
        found(row, "event type", rows::event_type)
    }

    async fn list_event_types(
        &self,
        query: &ListQuery,
        include_archived: bool,
    ) -> Result<Page<EventType>> {
        let db = self.client().await?;
        let mut select = Select::new(format!(
            "SELECT {} FROM event_type WHERE TRUE",
            rows::EVENT_TYPE_COLUMNS
        ));
        if !include_archived {
            select = select.and("event_type.archived = ?", false);
        }
        select
            .page(&db, "event_type.name", query, rows::event_type, |et| {
                et.name.clone()
            })
            .await
    }

    async fn update_event_type(&self, event_type: &EventType) -> Result<()> {
        let db = self.client().await?;
        let rows = execute(
            &db,
            "UPDATE event_type SET description = $2, archived = $3, deprecated = $4,
                 schemas = $5, feature_flag = $6, updated_at = $7
             WHERE name = $1",
            &[
                &event_type.name,
                &event_type.description,
                &event_type.archived,
                &event_type.deprecated,
                &event_type.schemas,
                &event_type.feature_flag,
                &ms(event_type.updated_at),
            ],
        )
        .await
        .map_err(storage)?;
        changed(rows, "event type")
    }

    async fn delete_event_type(&self, name: &str) -> Result<()> {
        let db = self.client().await?;
        let rows = execute(&db, "DELETE FROM event_type WHERE name = $1", &[&name])
            .await
            .map_err(storage)?;
        changed(rows, "event type")
    }

    async fn create_message(&self, new: NewMessage) -> Result<CreatedMessage> {
        let mut db = self.client().await?;
        let tx = db.transaction().await.map_err(storage)?;
        let targets = insert_message(&tx, &new).await?;
        if !targets.is_empty() {
            notify_due(&tx).await?;
        }
        tx.commit().await.map_err(storage)?;
        Ok(CreatedMessage { endpoints: targets })
    }

    async fn get_message(&self, app: &AppId, key: &str) -> Result<Message> {
        let db = self.client().await?;
        let column = key_column(key, MessageId::PREFIX, "event_id");
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
        .and_channel("message.channels", &filter.channel)
        .and_in("message.event_type", &filter.event_types)
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

    async fn claim_due(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<DeliveryJob>> {
        let db = self.client().await?;
        let lease_until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // One statement: lease the due rows no other claim holds (SKIP LOCKED passes over
        // rows another node is claiming this instant), then read each claimed delivery
        // with its message, endpoint and application.
        let sql = format!(
            "WITH claimed AS (
                 UPDATE destination SET lease_owner = $1, lease_until = $2, status = $5
                 WHERE (msg_id, endpoint_id) IN (
                     SELECT destination.msg_id, destination.endpoint_id FROM destination
                     JOIN endpoint ON endpoint.id = destination.endpoint_id
                     JOIN message ON message.id = destination.msg_id
                     WHERE destination.next_attempt <= $3
                       AND (destination.lease_until IS NULL OR destination.lease_until < $3)
                       AND NOT endpoint.disabled
                       AND message.payload IS NOT NULL
                     ORDER BY destination.next_attempt
                     LIMIT $4
                     FOR UPDATE OF destination SKIP LOCKED)
                 RETURNING *)
             SELECT {}, {}, {}, app.uid
             FROM claimed AS destination
             JOIN message ON message.id = destination.msg_id
             JOIN endpoint ON endpoint.id = destination.endpoint_id
             JOIN app ON app.id = destination.app_id
             ORDER BY destination.next_attempt",
            rows::DESTINATION_COLUMNS,
            rows::MESSAGE_COLUMNS,
            rows::ENDPOINT_COLUMNS
        );
        let claimed = query_rows(
            &db,
            &sql,
            &[
                &owner,
                &ms(lease_until),
                &ms(now),
                &limit,
                &code(MessageStatus::Sending.code()),
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
                        endpoint: Arc::new(rows::endpoint(columns)?),
                        app_uid: columns.take()?,
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
        let mut db = self.client().await?;
        let tx = db.transaction().await.map_err(storage)?;
        execute(
            &tx,
            "UPDATE destination SET lease_owner = NULL, lease_until = NULL, requeued = FALSE,
                 next_attempt = $3
             FROM unnest($1::text[], $2::text[]) AS released (msg_id, endpoint_id)
             WHERE destination.msg_id = released.msg_id
               AND destination.endpoint_id = released.endpoint_id
               AND destination.next_attempt IS NOT NULL",
            &[&msgs, &endpoints, &ms(retry_at)],
        )
        .await
        .map_err(storage)?;
        notify_due(&tx).await?;
        tx.commit().await.map_err(storage)
    }

    async fn record_outcomes(&self, outcomes: Arc<[AttemptOutcome]>) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        // A batch is three statements whatever its size (attempts, deliveries, then one per
        // endpoint whose state changes), not three round trips per outcome. Deliveries go
        // in key order and endpoints one by one in id order, so that two batches tend to
        // lock shared rows in the same order; should they deadlock all the same,
        // PostgreSQL aborts one and the recorder tries it again.
        let in_order: Vec<&AttemptOutcome> = outcomes.iter().collect();
        let mut by_delivery = in_order.clone();
        by_delivery.sort_by_key(|outcome| (&outcome.attempt.msg_id, &outcome.attempt.endpoint_id));
        let mut db = self.client().await?;
        let tx = db.transaction().await.map_err(storage)?;
        insert_attempts(&tx, &by_delivery).await?;
        finish_deliveries(&tx, &by_delivery).await?;
        for change in endpoint_changes(&in_order) {
            change.apply(&tx).await?;
        }
        if outcomes
            .iter()
            .any(|outcome| outcome.next_attempt.is_some())
        {
            notify_due(&tx).await?;
        }
        tx.commit().await.map_err(storage)
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        let db = self.client().await?;
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
            &[&ms(Utc::now())],
        )
        .await
        .map_err(storage)?;
        row.map(|row| read(&row, |c| c.take())).transpose()
    }

    async fn requeue(
        &self,
        app: &AppId,
        msg: &MessageId,
        endpoint: &EndpointId,
        trigger: TriggerType,
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
                &hookline_core::now(),
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
                &hookline_core::now(),
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
        .and_channel("message.channels", &filter.channel)
        .and_in("message.event_type", &filter.event_types);
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
        .and_channel("message.channels", &filter.channel)
        .and_in("message.event_type", &filter.event_types);
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
        self.purge(
            "DELETE FROM idempotency WHERE key IN (
                 SELECT key FROM idempotency WHERE expires_at < $1 LIMIT $2)",
            now,
        )
        .await
    }

    async fn create_source(&self, source: &Source) -> Result<()> {
        let mut db = self.client().await?;
        let tx = db.transaction().await.map_err(storage)?;
        insert_app(&tx, &source.hidden_app()).await?;
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
                &source.config,
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

    async fn get_source(&self, key: &str) -> Result<Source> {
        let db = self.client().await?;
        let column = key_column(key, SourceId::PREFIX, "uid");
        let sql = format!(
            "SELECT {} FROM source WHERE source.{column} = $1",
            rows::SOURCE_COLUMNS
        );
        let row = query_opt(&db, &sql, &[&key]).await.map_err(storage)?;
        found(row, "source", rows::source)
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
        row.map(|row| read(&row, rows::source)).transpose()
    }

    async fn list_sources(&self, query: &ListQuery) -> Result<Page<Source>> {
        let db = self.client().await?;
        Select::new(format!(
            "SELECT {} FROM source WHERE TRUE",
            rows::SOURCE_COLUMNS
        ))
        .page(&db, "source.id", query, rows::source, |source| {
            source.id.to_string()
        })
        .await
    }

    async fn update_source(&self, source: &Source) -> Result<()> {
        let mut db = self.client().await?;
        let tx = db.transaction().await.map_err(storage)?;
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
                &source.config,
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
        let app = query_opt(
            &tx,
            "SELECT app_id FROM source WHERE id = $1 FOR UPDATE",
            &[&id.as_str()],
        )
        .await
        .map_err(storage)?;
        let app = found(app, "source", |c| c.take::<String>())?;
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
        } = new;
        let source = request.source_id.clone();
        let mut db = self.client().await?;
        let tx = db.transaction().await.map_err(storage)?;
        // Held to commit: a concurrent `delete_source` waits for this request, or this
        // request for it and then finds no source. Taken before anything else, the order
        // `delete_source` locks in, so that the two cannot deadlock.
        let exists = query_opt(
            &tx,
            "SELECT 1 FROM source WHERE id = $1 FOR KEY SHARE",
            &[&source.as_str()],
        )
        .await
        .map_err(storage)?;
        if exists.is_none() {
            return Err(Error::NotFound("source"));
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
                    queued |= !insert_message(&tx, message).await?.is_empty();
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
                 msg_id, created_at)
             SELECT $1, $2, numbered.last_seq, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                 $14, $15
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
    ) -> Result<Page<IngestRequest>> {
        let db = self.client().await?;
        Select::new(format!(
            "SELECT {} FROM ingest_request WHERE TRUE",
            rows::INGEST_REQUEST_COLUMNS
        ))
        .and("ingest_request.source_id = ?", source.to_string())
        .page(
            &db,
            "ingest_request.id",
            query,
            rows::ingest_request,
            |request| request.id.to_string(),
        )
        .await
    }

    async fn ingest_requests_after(
        &self,
        source: &SourceId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<IngestRequest>> {
        let db = self.client().await?;
        let sql = format!(
            "SELECT {} FROM ingest_request
             WHERE ingest_request.source_id = $1 AND ingest_request.seq > $2
             ORDER BY ingest_request.seq LIMIT $3",
            rows::INGEST_REQUEST_COLUMNS
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        query_rows(&db, &sql, &[&source.as_str(), &after, &limit])
            .await
            .map_err(storage)?
            .iter()
            .map(|row| read(row, rows::ingest_request))
            .collect()
    }

    async fn purge_ingest_requests(&self, before: DateTime<Utc>) -> Result<u64> {
        self.purge(
            "DELETE FROM ingest_request WHERE id IN (
                 SELECT id FROM ingest_request WHERE created_at < $1 LIMIT $2)",
            before,
        )
        .await
    }

    async fn put_token(&self, token: &Token) -> Result<()> {
        let db = self.client().await?;
        execute(
            &db,
            "INSERT INTO token (hash, app_id, created_at) VALUES ($1, $2, $3)",
            &[
                &token.hash,
                &token.app_id.as_ref().map(AppId::as_str),
                &ms(token.created_at),
            ],
        )
        .await
        .map_err(duplicate("a token"))?;
        Ok(())
    }

    async fn find_token(&self, hash: &str) -> Result<Option<Token>> {
        let db = self.client().await?;
        let row = query_opt(
            &db,
            "SELECT hash, app_id, created_at FROM token WHERE hash = $1",
            &[&hash],
        )
        .await
        .map_err(storage)?;
        row.map(|row| {
            read(&row, |c| {
                Ok(Token {
                    hash: c.take()?,
                    app_id: c.take::<Option<String>>()?.map(AppId::from_string),
                    created_at: c.take()?,
                })
            })
        })
        .transpose()
    }

    async fn delete_token(&self, hash: &str) -> Result<()> {
        let db = self.client().await?;
        let rows = execute(&db, "DELETE FROM token WHERE hash = $1", &[&hash])
            .await
            .map_err(storage)?;
        changed(rows, "token")
    }

    async fn has_admin_token(&self) -> Result<bool> {
        let db = self.client().await?;
        let row = query_opt(
            &db,
            "SELECT EXISTS (SELECT 1 FROM token WHERE app_id IS NULL)",
            &[],
        )
        .await
        .map_err(storage)?;
        found(row, "token", |c| c.take())
    }
}

async fn insert_app(db: &impl GenericClient, app: &Application) -> Result<()> {
    execute(
        db,
        "INSERT INTO app (id, uid, name, throttle_rate, metadata, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &app.id.as_str(),
            &app.uid,
            &app.name,
            &app.throttle_rate.map(i32::from),
            &Json(&app.metadata),
            &ms(app.created_at),
            &ms(app.updated_at),
        ],
    )
    .await
    .map_err(duplicate("an application"))?;
    Ok(())
}

/// Deletes an application with everything in it: its endpoints, messages, deliveries and
/// attempts go with it (`ON DELETE CASCADE`).
async fn delete_app_rows(db: &impl GenericClient, id: &AppId) -> Result<()> {
    let rows = execute(db, "DELETE FROM app WHERE id = $1", &[&id.as_str()])
        .await
        .map_err(storage)?;
    changed(rows, "application")
}

/// Stores a message, one destination per endpoint it is for, and its idempotency record,
/// and returns those endpoints: what [`Store::create_message`] does, and [`Store::ingest`]
/// for each forwarding message. The caller notifies and commits.
async fn insert_message(db: &impl GenericClient, new: &NewMessage) -> Result<Vec<EndpointId>> {
    let message = &new.message;
    let created = ms(message.created_at);
    execute(
        db,
        "INSERT INTO message (id, app_id, event_id, event_type, payload, channels, headers,
             created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &message.id.as_str(),
            &message.app_id.as_str(),
            &message.event_id,
            &message.event_type,
            &message.payload,
            &message.channels,
            &rows::message_headers(&message.headers),
            &created,
        ],
    )
    .await
    .map_err(or_conflict(|| {
        Error::conflict("a message with this eventId already exists")
    }))?;

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
    if let Some(record) = &new.idempotency {
        put_idempotent(db, record).await?;
    }
    Ok(targets)
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
    let responses: Vec<Option<&str>> = attempts().map(|a| a.response.as_deref()).collect();
    let headers = attempts()
        .map(|a| serde_json::to_string(&a.response_headers))
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
        "INSERT INTO attempt (id, app_id, msg_id, endpoint_id, url, status,
             response_status_code, response, response_headers, duration_ms, trigger_type,
             error_kind, created_at)
         SELECT a.id, a.app_id, a.msg_id, a.endpoint_id, a.url, a.status, a.code, a.response,
             a.headers::jsonb, a.duration, a.trigger, a.error, a.created
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
             $6::smallint[], $7::smallint[], $8::text[], $9::text[], $10::bigint[],
             $11::smallint[], $12::text[], $13::timestamptz[])
             AS a (id, app_id, msg_id, endpoint_id, url, status, code, response, headers,
                   duration, trigger, error, created)
         WHERE EXISTS (SELECT 1 FROM message WHERE message.id = a.msg_id)",
        &[
            &ids, &apps, &msgs, &endpoints, &urls, &statuses, &codes, &responses, &headers,
            &durations, &triggers, &errors, &created,
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
        "UPDATE destination SET status = d.status, attempts = d.attempts,
             next_attempt = CASE WHEN requeued THEN next_attempt ELSE d.next END,
             trigger_type = CASE WHEN requeued THEN trigger_type ELSE 0 END,
             requeued = FALSE, lease_owner = NULL, lease_until = NULL, updated_at = d.updated
         FROM unnest($1::text[], $2::text[], $3::smallint[], $4::timestamptz[], $5::int[],
             $6::timestamptz[]) AS d (msg_id, endpoint_id, status, next, attempts, updated)
         WHERE destination.msg_id = d.msg_id AND destination.endpoint_id = d.endpoint_id",
        &[&msgs, &endpoints, &statuses, &next, &attempts, &updated],
    )
    .await
    .map_err(storage)?;
    Ok(())
}

/// What a batch of outcomes does to one endpoint, folded in the batch's order.
#[derive(Debug)]
struct EndpointChange<'a> {
    endpoint: &'a str,
    /// Disabled by the batch, at this time.
    disabled_at: Option<DateTime<Utc>>,
    /// A success came after the batch's last exhaustion (or there was none): the endpoint
    /// is well, unless `failing_from` says it failed again since.
    cleared: bool,
    /// The first exhaustion after the last success: failing since then (if not already,
    /// when nothing cleared it in this batch).
    failing_from: Option<DateTime<Utc>>,
}

/// One change per endpoint touched by `outcomes` (in their order), sorted by endpoint id.
fn endpoint_changes<'a>(outcomes: &[&'a AttemptOutcome]) -> Vec<EndpointChange<'a>> {
    let mut by_endpoint: Vec<&'a AttemptOutcome> = outcomes.to_vec();
    // Stable: each endpoint's outcomes stay in the batch's order.
    by_endpoint.sort_by_key(|outcome| &outcome.attempt.endpoint_id);
    let mut changes: Vec<EndpointChange<'a>> = Vec::new();
    for outcome in by_endpoint {
        let endpoint = outcome.attempt.endpoint_id.as_str();
        if changes.last().is_none_or(|last| last.endpoint != endpoint) {
            changes.push(EndpointChange {
                endpoint,
                disabled_at: None,
                cleared: false,
                failing_from: None,
            });
        }
        let change = changes.last_mut().expect("pushed above");
        let at = ms(outcome.attempt.created_at);
        if outcome.disable_endpoint {
            change.disabled_at = Some(at);
        }
        match outcome.endpoint_failing {
            Some(false) => {
                change.cleared = true;
                change.failing_from = None;
            }
            Some(true) => {
                change.failing_from.get_or_insert(at);
            }
            None => {}
        }
    }
    changes
}

impl EndpointChange<'_> {
    async fn apply(&self, db: &impl GenericClient) -> Result<()> {
        if let Some(at) = self.disabled_at {
            execute(
                db,
                "UPDATE endpoint SET disabled = TRUE, updated_at = $2 WHERE id = $1",
                &[&self.endpoint, &at],
            )
            .await
            .map_err(storage)?;
        }
        if self.cleared || self.failing_from.is_some() {
            // Written (and locked) only when it changes: most batches are successes on an
            // endpoint that is not failing.
            execute(
                db,
                "UPDATE endpoint
                 SET failing_since = CASE WHEN $2 THEN $3 ELSE COALESCE(failing_since, $3) END
                 WHERE id = $1 AND failing_since IS DISTINCT FROM
                     (CASE WHEN $2 THEN $3 ELSE COALESCE(failing_since, $3) END)",
                &[&self.endpoint, &self.cleared, &self.failing_from],
            )
            .await
            .map_err(storage)?;
        }
        Ok(())
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
