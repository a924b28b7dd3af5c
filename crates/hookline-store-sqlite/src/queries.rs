//! The SQL behind each [`Store`] operation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hookline_core::id::{AppId, AttemptId, EndpointId, IngestRequestId, MessageId, SourceId};
use hookline_core::ingest::{IngestRequest, IngestedRequest, NewIngestRequest, Source, Verdict};
use hookline_core::model::{
    Application, Attempt, Destination, Endpoint, EndpointStats, EventType, IdempotencyRecord,
    IdempotentResponse, Message, MessageStatus, Token, TriggerType,
};
use hookline_core::page::{ListQuery, Page};
use hookline_core::store::{
    AttemptFilter, AttemptOutcome, CreatedMessage, DeliveryJob, MessageFilter, NewMessage,
};
use hookline_core::{Error, Result, Store};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use crate::SqliteStore;
use crate::cache::EndpointCache;
use crate::rows::{
    self, classify, headers_json, json, map_json, millis, opt_json, secrets_json, time,
};

/// How many rows one write of a purge deletes: a purge of millions of rows goes in steps,
/// so that other writes are not held up behind it.
const PURGE_BATCH: usize = 10_000;

/// The accepted request a new one with the same dedupe key repeats. It must search
/// `ingest_request_dedupe`: any plan that walks the source's whole log makes each
/// request slower than the last.
pub(crate) const DEDUPE_ORIGINAL: &str = "SELECT id FROM ingest_request
     WHERE source_id = ?1 AND dedupe_key = ?2 AND verdict = ?3 AND created_at >= ?4
     ORDER BY id LIMIT 1";

impl SqliteStore {
    /// Runs `delete` (parameters: a time, a batch size) one batch per write until a batch
    /// comes up short; returns how many rows went.
    async fn purge(&self, delete: &'static str, before: DateTime<Utc>) -> Result<u64> {
        let before = millis(before);
        let mut purged = 0;
        loop {
            let deleted = self
                .write(move |conn| {
                    conn.prepare_cached(delete)
                        .and_then(|mut s| s.execute(params![before, PURGE_BATCH as i64]))
                        .map_err(Error::storage)
                })
                .await?;
            purged += deleted as u64;
            if deleted < PURGE_BATCH {
                return Ok(purged);
            }
        }
    }
}

/// A query under construction: a `SELECT … WHERE` prefix and its parameters.
struct Select {
    sql: String,
    params: Vec<Value>,
}

impl Select {
    fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    fn and(mut self, condition: &str, value: impl Into<Value>) -> Self {
        self.sql.push_str(" AND ");
        self.sql.push_str(condition);
        self.params.push(value.into());
        self
    }

    fn and_channel(self, column: &str, channel: &Option<String>) -> Self {
        match channel {
            Some(channel) => self.and(
                &format!("EXISTS (SELECT 1 FROM json_each({column}) WHERE value = ?)"),
                channel.clone(),
            ),
            None => self,
        }
    }

    fn and_in(mut self, column: &str, values: &Option<Vec<String>>) -> Self {
        if let Some(values) = values {
            let marks = vec!["?"; values.len()].join(", ");
            self.sql.push_str(&format!(" AND {column} IN ({marks})"));
            self.params.extend(values.iter().cloned().map(Value::from));
        }
        self
    }

    /// Runs the query as one page of `query`, sorted and bounded on `key_column`.
    fn page<T>(
        mut self,
        conn: &Connection,
        key_column: &str,
        query: &ListQuery,
        map: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
        key: impl Fn(&T) -> String,
    ) -> Result<Page<T>> {
        if let Some((bound, ascending)) = query.bound() {
            let op = if ascending { ">" } else { "<" };
            self = self.and(&format!("{key_column} {op} ?"), bound.to_owned());
        }
        let direction = match query.scan_order() {
            hookline_core::page::Order::Ascending => "ASC",
            hookline_core::page::Order::Descending => "DESC",
        };
        self.sql
            .push_str(&format!(" ORDER BY {key_column} {direction} LIMIT ?"));
        self.params.push(Value::from(query.limit as i64 + 1));
        let mut statement = conn.prepare_cached(&self.sql).map_err(Error::storage)?;
        let rows = statement
            .query_map(params_from_iter(self.params), map)
            .map_err(Error::storage)?
            .collect::<rusqlite::Result<Vec<T>>>()
            .map_err(Error::storage)?;
        Ok(Page::from_scan(rows, query, key))
    }
}

fn not_found<T>(what: &'static str) -> impl FnOnce(Option<T>) -> Result<T> {
    move |found| found.ok_or(Error::NotFound(what))
}

fn one<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.query_row(params, map).optional())
        .map_err(Error::storage)
}

fn changed(rows: usize, what: &'static str) -> Result<()> {
    if rows == 0 {
        Err(Error::NotFound(what))
    } else {
        Ok(())
    }
}

/// `(column, value)` for a lookup by id or uid: a uid never carries the id prefix.
fn key_column(key: &str, prefix: &str, uid_column: &'static str) -> &'static str {
    if key.starts_with(prefix) {
        "id"
    } else {
        uid_column
    }
}

fn insert_app(conn: &Connection, app: &Application) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO app (id, uid, name, throttle_rate, metadata, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            app.id.as_str(),
            app.uid,
            app.name,
            app.throttle_rate,
            map_json(&app.metadata),
            millis(app.created_at),
            millis(app.updated_at),
        ])
    })
    .map_err(|e| classify(e, "an application"))?;
    Ok(())
}

fn endpoint_params(endpoint: &Endpoint) -> Vec<Value> {
    vec![
        endpoint.id.as_str().to_owned().into(),
        endpoint.app_id.as_str().to_owned().into(),
        endpoint.uid.clone().into(),
        endpoint.url.clone().into(),
        endpoint.description.clone().into(),
        i64::from(endpoint.disabled).into(),
        endpoint.throttle_rate.map(i64::from).into(),
        opt_json(&endpoint.event_types).into(),
        opt_json(&endpoint.channels).into(),
        map_json(&endpoint.metadata).into(),
        map_json(&endpoint.headers).into(),
        secrets_json(&endpoint.secrets).into(),
        endpoint.failing_since.map(millis).into(),
        millis(endpoint.created_at).into(),
        millis(endpoint.updated_at).into(),
    ]
}

/// Deletes an application with everything in it: its endpoints, messages, deliveries and
/// attempts go with it (`ON DELETE CASCADE`).
fn delete_app_rows(conn: &Connection, id: &AppId) -> Result<()> {
    let rows = conn
        .execute("DELETE FROM app WHERE id = ?1", [id.as_str()])
        .map_err(Error::storage)?;
    changed(rows, "application")
}

/// A source's values in column order (`rows::SOURCE_COLUMNS`), to bind to an insert or
/// an update.
fn source_params(source: &Source) -> Vec<Value> {
    vec![
        source.id.as_str().to_owned().into(),
        source.uid.clone().into(),
        source.name.clone().into(),
        source.source_type.clone().into(),
        json(&source.config).into(),
        map_json(&source.metadata).into(),
        source.app_id.as_str().to_owned().into(),
        source.token.clone().into(),
        source.previous_token.clone().into(),
        source.previous_token_expires_at.map(millis).into(),
        millis(source.created_at).into(),
        millis(source.updated_at).into(),
    ]
}

/// Stores a message, one destination per endpoint it is for, and its idempotency record:
/// what [`Store::create_message`] does, and [`Store::ingest`] for each forwarding message.
fn insert_message(conn: &Connection, new: &NewMessage) -> Result<CreatedMessage> {
    let message = &new.message;
    let created = millis(message.created_at);
    conn.prepare_cached(
        "INSERT INTO message (id, app_id, event_id, event_type, payload, channels, headers,
             created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
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
        ])
    })
    .map_err(|e| match classify(e, "a message") {
        Error::Conflict { .. } => Error::conflict("a message with this eventId already exists"),
        other => other,
    })?;

    // Only what matching needs: this runs on the writer thread for every message.
    let mut statement = conn
        .prepare_cached(
            "SELECT id, disabled, event_types, channels FROM endpoint WHERE app_id = ?1",
        )
        .map_err(Error::storage)?;
    let endpoints = statement
        .query_map([message.app_id.as_str()], rows::endpoint_filter)
        .map_err(Error::storage)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(Error::storage)?;
    let targets: Vec<EndpointId> = endpoints
        .into_iter()
        .filter(|filter| match &new.only_endpoint {
            Some(only) => &filter.id == only,
            None => filter.wants(&message.event_type, message.channels.as_deref()),
        })
        .map(|filter| filter.id)
        .collect();
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO destination (msg_id, endpoint_id, app_id, status, next_attempt,
                 attempts, trigger_type, msg_created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, ?5, ?5)",
        )
        .map_err(Error::storage)?;
    for endpoint in &targets {
        insert
            .execute(params![
                message.id.as_str(),
                endpoint.as_str(),
                message.app_id.as_str(),
                MessageStatus::Sending.code(),
                created,
            ])
            .map_err(Error::storage)?;
    }
    if let Some(record) = &new.idempotency {
        put_idempotent(conn, record)?;
    }
    Ok(CreatedMessage { endpoints: targets })
}

/// The jobs of claimed deliveries. Deliveries of one message (a fan-out) share one read
/// of it; deliveries to one endpoint share its row, which later claims take from the
/// endpoint cache while it stays unchanged.
fn load_jobs(
    conn: &Connection,
    claimed: Vec<Destination>,
    cache: &EndpointCache,
) -> Result<Vec<DeliveryJob>> {
    let generation = cache.generation();
    let message_sql = format!(
        "SELECT {}, app.uid FROM message JOIN app ON app.id = message.app_id
         WHERE message.id = ?1",
        rows::MESSAGE_COLUMNS,
    );
    let endpoint_sql = format!(
        "SELECT {} FROM endpoint WHERE id = ?1",
        rows::ENDPOINT_COLUMNS
    );
    let mut messages: HashMap<MessageId, (Arc<Message>, Option<String>)> = HashMap::new();
    let mut endpoints: HashMap<EndpointId, Arc<Endpoint>> = HashMap::new();
    let mut jobs = Vec::with_capacity(claimed.len());
    for destination in claimed {
        if !messages.contains_key(&destination.msg_id) {
            let found = one(conn, &message_sql, [destination.msg_id.as_str()], |row| {
                Ok((rows::message_at(row, 0)?, row.get::<_, Option<String>>(8)?))
            })?;
            let Some((message, app_uid)) = found else {
                continue; // Deleted since the claim.
            };
            messages.insert(destination.msg_id.clone(), (Arc::new(message), app_uid));
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
                    let endpoint = Arc::new(endpoint);
                    cache.put(generation, &endpoint);
                    endpoint
                }
            };
            endpoints.insert(id.clone(), endpoint);
        }
        let (message, app_uid) = &messages[&destination.msg_id];
        jobs.push(DeliveryJob {
            endpoint: Arc::clone(&endpoints[&destination.endpoint_id]),
            message: Arc::clone(message),
            app_uid: app_uid.clone(),
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
             error_kind, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
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
            attempt.response,
            json(&attempt.response_headers),
            attempt.response_duration_ms,
            attempt.trigger_type.code(),
            attempt.error_kind.map(|kind| kind.as_str()),
            millis(attempt.created_at),
        ])
    })
    .map_err(Error::storage)?;
    Ok(())
}

/// Records `outcomes` in order; whether any endpoint row changed.
fn record_outcomes(conn: &Connection, outcomes: &[AttemptOutcome]) -> Result<bool> {
    // The failing state each endpoint was last given in this batch: giving it the same
    // again changes nothing, so a batch of one endpoint's successes clears it once.
    let mut failing: HashMap<&EndpointId, bool> = HashMap::new();
    let mut changed = false;
    for outcome in outcomes {
        record_outcome(conn, outcome)?;
        let endpoint = &outcome.attempt.endpoint_id;
        let now = millis(outcome.attempt.created_at);
        if outcome.disable_endpoint {
            let rows = conn
                .prepare_cached("UPDATE endpoint SET disabled = 1, updated_at = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![endpoint.as_str(), now]))
                .map_err(Error::storage)?;
            changed |= rows > 0;
        }
        let Some(now_failing) = outcome.endpoint_failing else {
            continue;
        };
        if failing.insert(endpoint, now_failing) == Some(now_failing) {
            continue;
        }
        let rows = if now_failing {
            conn.prepare_cached(
                "UPDATE endpoint SET failing_since = ?2 WHERE id = ?1 AND failing_since IS NULL",
            )
            .and_then(|mut s| s.execute(params![endpoint.as_str(), now]))
        } else {
            conn.prepare_cached(
                "UPDATE endpoint SET failing_since = NULL
                 WHERE id = ?1 AND failing_since IS NOT NULL",
            )
            .and_then(|mut s| s.execute([endpoint.as_str()]))
        }
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
impl Store for SqliteStore {
    async fn create_app(&self, app: &Application) -> Result<()> {
        let app = app.clone();
        self.write(move |conn| insert_app(conn, &app)).await
    }

    async fn get_app(&self, key: &str) -> Result<Application> {
        let key = key.to_owned();
        self.lookup(move |conn| {
            let column = key_column(&key, AppId::PREFIX, "uid");
            let sql = format!("SELECT {} FROM app WHERE {column} = ?1", rows::APP_COLUMNS);
            one(conn, &sql, [&key], rows::app).and_then(not_found("application"))
        })
        .await
    }

    async fn list_apps(&self, query: &ListQuery) -> Result<Page<Application>> {
        let query = query.clone();
        self.read(move |conn| {
            // A source's hidden application is reached through the source only.
            Select::new(format!(
                "SELECT {} FROM app
                 WHERE NOT EXISTS (SELECT 1 FROM source WHERE source.app_id = app.id)",
                rows::APP_COLUMNS
            ))
            .page(conn, "app.id", &query, rows::app, |app| app.id.to_string())
        })
        .await
    }

    async fn update_app(&self, app: &Application) -> Result<()> {
        let app = app.clone();
        self.write(move |conn| {
            let rows = conn
                .prepare_cached(
                    "UPDATE app SET uid = ?2, name = ?3, throttle_rate = ?4, metadata = ?5,
                         updated_at = ?6 WHERE id = ?1",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        app.id.as_str(),
                        app.uid,
                        app.name,
                        app.throttle_rate,
                        map_json(&app.metadata),
                        millis(app.updated_at),
                    ])
                })
                .map_err(|e| classify(e, "an application"))?;
            changed(rows, "application")
        })
        .await
    }

    async fn delete_app(&self, id: &AppId) -> Result<()> {
        let id = id.clone();
        self.write_endpoints(
            move |conn| {
                let owned = one(
                    conn,
                    "SELECT 1 FROM source WHERE app_id = ?1",
                    [id.as_str()],
                    |_| Ok(()),
                )?;
                if owned.is_some() {
                    return Err(Error::conflict(
                        "the application belongs to a source; delete the source instead",
                    ));
                }
                delete_app_rows(conn, &id)
            },
            |_| true,
        )
        .await
    }

    async fn create_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        let values = endpoint_params(endpoint);
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO endpoint (id, app_id, uid, url, description, disabled, throttle_rate,
                     event_types, channels, metadata, headers, secrets, failing_since,
                     created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )
            .and_then(|mut s| s.execute(params_from_iter(values)))
            .map_err(|e| classify(e, "an endpoint"))?;
            Ok(())
        })
        .await
    }

    async fn get_endpoint(&self, app: &AppId, key: &str) -> Result<Endpoint> {
        let (app, key) = (app.clone(), key.to_owned());
        self.lookup(move |conn| {
            let column = key_column(&key, EndpointId::PREFIX, "uid");
            let sql = format!(
                "SELECT {} FROM endpoint WHERE app_id = ?1 AND {column} = ?2",
                rows::ENDPOINT_COLUMNS
            );
            one(conn, &sql, params![app.as_str(), key], rows::endpoint)
                .and_then(not_found("endpoint"))
        })
        .await
    }

    async fn list_endpoints(&self, app: &AppId, query: &ListQuery) -> Result<Page<Endpoint>> {
        let (app, query) = (app.clone(), query.clone());
        self.read(move |conn| {
            Select::new(format!(
                "SELECT {} FROM endpoint WHERE 1 = 1",
                rows::ENDPOINT_COLUMNS
            ))
            .and("endpoint.app_id = ?", app.into_string())
            .page(conn, "endpoint.id", &query, rows::endpoint, |e| {
                e.id.to_string()
            })
        })
        .await
    }

    async fn update_endpoint(&self, endpoint: &Endpoint, set_disabled: bool) -> Result<()> {
        let mut values = endpoint_params(endpoint);
        values.push(i64::from(set_disabled).into());
        self.write_endpoints(
            move |conn| {
                let rows = conn
                    .prepare_cached(
                        "UPDATE endpoint SET uid = ?3, url = ?4, description = ?5,
                         disabled = CASE WHEN ?16 = 1 THEN ?6 ELSE disabled END,
                         throttle_rate = ?7, event_types = ?8, channels = ?9, metadata = ?10,
                         headers = ?11, secrets = ?12, updated_at = ?15,
                         failing_since = CASE WHEN ?16 = 1 AND disabled = 1 AND ?6 = 0 THEN NULL
                                              ELSE failing_since END
                     WHERE id = ?1 AND app_id = ?2",
                    )
                    .and_then(|mut s| s.execute(params_from_iter(values)))
                    .map_err(|e| classify(e, "an endpoint"))?;
                changed(rows, "endpoint")
            },
            |_| true,
        )
        .await
    }

    async fn delete_endpoint(&self, app: &AppId, id: &EndpointId) -> Result<()> {
        let (app, id) = (app.clone(), id.clone());
        self.write_endpoints(
            move |conn| {
                let rows = conn
                    .execute(
                        "DELETE FROM endpoint WHERE app_id = ?1 AND id = ?2",
                        [app.as_str(), id.as_str()],
                    )
                    .map_err(Error::storage)?;
                changed(rows, "endpoint")
            },
            |_| true,
        )
        .await
    }

    async fn endpoint_stats(
        &self,
        app: &AppId,
        endpoint: &EndpointId,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<EndpointStats> {
        let (app, endpoint) = (app.clone(), endpoint.clone());
        self.read(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT status, count(*) FROM destination
                     WHERE app_id = ?1 AND endpoint_id = ?2
                       AND msg_created_at >= ?3 AND msg_created_at <= ?4
                     GROUP BY status",
                )
                .map_err(Error::storage)?;
            let counts = statement
                .query_map(
                    params![
                        app.as_str(),
                        endpoint.as_str(),
                        millis(since),
                        millis(until)
                    ],
                    |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
                )
                .map_err(Error::storage)?;
            let mut stats = EndpointStats::default();
            for count in counts {
                let (status, n) = count.map_err(Error::storage)?;
                match MessageStatus::from_code(status) {
                    Some(MessageStatus::Success) => stats.success = n,
                    Some(MessageStatus::Pending) => stats.pending = n,
                    Some(MessageStatus::Sending) => stats.sending = n,
                    Some(MessageStatus::Fail) | None => stats.fail += n,
                }
            }
            Ok(stats)
        })
        .await
    }

    async fn create_event_type(&self, event_type: &EventType) -> Result<()> {
        let et = event_type.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO event_type (name, description, archived, deprecated, schemas,
                     feature_flag, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    et.name,
                    et.description,
                    et.archived,
                    et.deprecated,
                    opt_json(&et.schemas),
                    et.feature_flag,
                    millis(et.created_at),
                    millis(et.updated_at),
                ])
            })
            .map_err(|e| match classify(e, "an event type") {
                Error::Conflict { .. } => Error::Conflict {
                    code: "event_type_exists",
                    detail: "an event type with this name already exists".into(),
                },
                other => other,
            })?;
            Ok(())
        })
        .await
    }

    async fn get_event_type(&self, name: &str) -> Result<EventType> {
        let name = name.to_owned();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {} FROM event_type WHERE name = ?1",
                rows::EVENT_TYPE_COLUMNS
            );
            one(conn, &sql, [&name], rows::event_type).and_then(not_found("event type"))
        })
        .await
    }

    async fn list_event_types(
        &self,
        query: &ListQuery,
        include_archived: bool,
    ) -> Result<Page<EventType>> {
        let query = query.clone();
        self.read(move |conn| {
            let mut select = Select::new(format!(
                "SELECT {} FROM event_type WHERE 1 = 1",
                rows::EVENT_TYPE_COLUMNS
            ));
            if !include_archived {
                select = select.and("archived = ?", 0);
            }
            select.page(conn, "name", &query, rows::event_type, |et| et.name.clone())
        })
        .await
    }

    async fn update_event_type(&self, event_type: &EventType) -> Result<()> {
        let et = event_type.clone();
        self.write(move |conn| {
            let rows = conn
                .prepare_cached(
                    "UPDATE event_type SET description = ?2, archived = ?3, deprecated = ?4,
                         schemas = ?5, feature_flag = ?6, updated_at = ?7 WHERE name = ?1",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        et.name,
                        et.description,
                        et.archived,
                        et.deprecated,
                        opt_json(&et.schemas),
                        et.feature_flag,
                        millis(et.updated_at),
                    ])
                })
                .map_err(Error::storage)?;
            changed(rows, "event type")
        })
        .await
    }

    async fn delete_event_type(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.write(move |conn| {
            let rows = conn
                .execute("DELETE FROM event_type WHERE name = ?1", [&name])
                .map_err(Error::storage)?;
            changed(rows, "event type")
        })
        .await
    }

    async fn create_message(&self, new: NewMessage) -> Result<CreatedMessage> {
        self.write(move |conn| insert_message(conn, &new)).await
    }

    async fn get_message(&self, app: &AppId, key: &str) -> Result<Message> {
        let (app, key) = (app.clone(), key.to_owned());
        self.lookup(move |conn| {
            let column = key_column(&key, MessageId::PREFIX, "event_id");
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
            .and_channel("message.channels", &filter.channel)
            .and_in("message.event_type", &filter.event_types)
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

    async fn claim_due(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<DeliveryJob>> {
        let owner = owner.to_owned();
        let lease_until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        let claimed = self
            .write(move |conn| {
                let mut claim = conn
                    .prepare_cached(
                        "UPDATE destination SET lease_owner = ?1, lease_until = ?2, status = ?5
                     WHERE rowid IN (
                         SELECT destination.rowid FROM destination
                         JOIN endpoint ON endpoint.id = destination.endpoint_id
                         JOIN message ON message.id = destination.msg_id
                         WHERE destination.next_attempt <= ?3
                           AND (destination.lease_until IS NULL OR destination.lease_until < ?3)
                           AND endpoint.disabled = 0
                           AND message.payload IS NOT NULL
                         ORDER BY destination.next_attempt
                         LIMIT ?4)
                     RETURNING app_id, msg_id, endpoint_id, status, next_attempt, attempts,
                         trigger_type, updated_at",
                    )
                    .map_err(Error::storage)?;
                let claimed = claim
                    .query_map(
                        params![
                            owner,
                            millis(lease_until),
                            millis(now),
                            limit as i64,
                            MessageStatus::Sending.code()
                        ],
                        |row| rows::destination_at(row, 0),
                    )
                    .map_err(Error::storage)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(Error::storage)?;
                Ok(claimed)
            })
            .await?;
        // The claim is committed; reading the jobs needs no writer time.
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let cache = Arc::clone(&self.inner.endpoints);
        self.read(move |conn| load_jobs(conn, claimed, &cache))
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

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        let now = millis(Utc::now());
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

    async fn requeue(
        &self,
        app: &AppId,
        msg: &MessageId,
        endpoint: &EndpointId,
        trigger: TriggerType,
    ) -> Result<()> {
        let (app, msg, endpoint) = (app.clone(), msg.clone(), endpoint.clone());
        let now = millis(Utc::now());
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
    ) -> Result<u64> {
        let (app, endpoint) = (app.clone(), endpoint.clone());
        let now = millis(Utc::now());
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
            .and_channel("message.channels", &filter.channel)
            .and_in("message.event_type", &filter.event_types);
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
            .and_channel("message.channels", &filter.channel)
            .and_in("message.event_type", &filter.event_types);
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

    async fn get_idempotent(
        &self,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotentResponse>> {
        let key = key.to_owned();
        self.lookup(move |conn| {
            one(
                conn,
                "SELECT status, body FROM idempotency WHERE key = ?1 AND expires_at > ?2",
                params![key, millis(now)],
                |row| {
                    Ok(IdempotentResponse {
                        status: row.get(0)?,
                        body: row.get(1)?,
                    })
                },
            )
        })
        .await
    }

    async fn put_idempotent(&self, record: &IdempotencyRecord) -> Result<()> {
        let record = record.clone();
        self.write(move |conn| put_idempotent(conn, &record)).await
    }

    async fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<u64> {
        self.purge(
            "DELETE FROM idempotency WHERE rowid IN (
                 SELECT rowid FROM idempotency WHERE expires_at < ?1 LIMIT ?2)",
            now,
        )
        .await
    }

    async fn create_source(&self, source: &Source) -> Result<()> {
        let (app, values) = (source.hidden_app(), source_params(source));
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

    async fn get_source(&self, key: &str) -> Result<Source> {
        let key = key.to_owned();
        self.lookup(move |conn| {
            let column = key_column(&key, SourceId::PREFIX, "uid");
            let sql = format!(
                "SELECT {} FROM source WHERE {column} = ?1",
                rows::SOURCE_COLUMNS
            );
            one(conn, &sql, [&key], rows::source).and_then(not_found("source"))
        })
        .await
    }

    async fn find_source_by_token(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Source>> {
        let token = token.to_owned();
        self.lookup(move |conn| {
            let sql = format!(
                "SELECT {} FROM source
                 WHERE token = ?1
                    OR (previous_token = ?1
                        AND (previous_token_expires_at IS NULL
                             OR previous_token_expires_at > ?2))
                 ORDER BY token = ?1 DESC LIMIT 1",
                rows::SOURCE_COLUMNS
            );
            one(conn, &sql, params![token, millis(now)], rows::source)
        })
        .await
    }

    async fn list_sources(&self, query: &ListQuery) -> Result<Page<Source>> {
        let query = query.clone();
        self.read(move |conn| {
            Select::new(format!(
                "SELECT {} FROM source WHERE 1 = 1",
                rows::SOURCE_COLUMNS
            ))
            .page(conn, "source.id", &query, rows::source, |source| {
                source.id.to_string()
            })
        })
        .await
    }

    async fn update_source(&self, source: &Source) -> Result<()> {
        let (id, app) = (source.id.clone(), source.hidden_app());
        let values = source_params(source);
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
        self.write(move |conn| {
            let NewIngestRequest {
                mut request,
                dedupe_since,
                messages,
            } = new;
            let source_id = request.source_id.clone();
            let source = source_id.as_str();
            one(conn, "SELECT 1 FROM source WHERE id = ?1", [source], |_| {
                Ok(())
            })?
            .ok_or(Error::NotFound("source"))?;
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
            match &original {
                Some(original) => request.mark_duplicate_of(original),
                None if request.verdict == Verdict::Accepted => {
                    for message in &messages {
                        insert_message(conn, message)?;
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
                id: request.id,
                seq,
                verdict: request.verdict,
                original,
            })
        })
        .await
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
    ) -> Result<Page<IngestRequest>> {
        let (source, query) = (source.clone(), query.clone());
        self.read(move |conn| {
            Select::new(format!(
                "SELECT {} FROM ingest_request WHERE 1 = 1",
                rows::INGEST_REQUEST_COLUMNS
            ))
            .and("ingest_request.source_id = ?", source.into_string())
            .page(
                conn,
                "ingest_request.id",
                &query,
                rows::ingest_request,
                |request| request.id.to_string(),
            )
        })
        .await
    }

    async fn ingest_requests_after(
        &self,
        source: &SourceId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<IngestRequest>> {
        let source = source.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let sql = format!(
                "SELECT {} FROM ingest_request WHERE source_id = ?1 AND seq > ?2
                 ORDER BY seq LIMIT ?3",
                rows::INGEST_REQUEST_COLUMNS
            );
            let mut statement = conn.prepare_cached(&sql).map_err(Error::storage)?;
            statement
                .query_map(params![source.as_str(), after, limit], rows::ingest_request)
                .map_err(Error::storage)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(Error::storage)
        })
        .await
    }

    async fn purge_ingest_requests(&self, before: DateTime<Utc>) -> Result<u64> {
        self.purge(
            "DELETE FROM ingest_request WHERE rowid IN (
                 SELECT rowid FROM ingest_request WHERE created_at < ?1 LIMIT ?2)",
            before,
        )
        .await
    }

    async fn put_token(&self, token: &Token) -> Result<()> {
        let token = token.clone();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO token (hash, app_id, created_at) VALUES (?1, ?2, ?3)",
                params![
                    token.hash,
                    token.app_id.as_ref().map(AppId::as_str),
                    millis(token.created_at)
                ],
            )
            .map_err(|e| classify(e, "a token"))?;
            Ok(())
        })
        .await
    }

    async fn find_token(&self, hash: &str) -> Result<Option<Token>> {
        let hash = hash.to_owned();
        self.lookup(move |conn| {
            one(
                conn,
                "SELECT hash, app_id, created_at FROM token WHERE hash = ?1",
                [&hash],
                |row| {
                    Ok(Token {
                        hash: row.get(0)?,
                        app_id: row.get::<_, Option<String>>(1)?.map(AppId::from_string),
                        created_at: time(row.get(2)?),
                    })
                },
            )
        })
        .await
    }

    async fn delete_token(&self, hash: &str) -> Result<()> {
        let hash = hash.to_owned();
        self.write(move |conn| {
            let rows = conn
                .execute("DELETE FROM token WHERE hash = ?1", [&hash])
                .map_err(Error::storage)?;
            changed(rows, "token")
        })
        .await
    }

    async fn has_admin_token(&self) -> Result<bool> {
        self.read(|conn| {
            conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM token WHERE app_id IS NULL)",
                [],
                |row| row.get(0),
            )
            .map_err(Error::storage)
        })
        .await
    }
}

fn put_idempotent(conn: &Connection, record: &IdempotencyRecord) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO idempotency (key, status, body, expires_at)
         VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| {
        s.execute(params![
            record.key,
            record.response.status,
            record.response.body,
            millis(record.expires_at),
        ])
    })
    .map_err(Error::storage)?;
    Ok(())
}

/// Logs a received request, `seq` included.
fn insert_ingest_request(conn: &Connection, request: &IngestRequest) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO ingest_request (id, source_id, seq, method, path, query, headers, body,
             verdict, status_code, reason_code, reason, dedupe_key, event_type, msg_id,
             created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
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
        ])
    })
    .map_err(|e| classify(e, "a logged request"))?;
    Ok(())
}
