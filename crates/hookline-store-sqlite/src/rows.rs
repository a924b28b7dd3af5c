//! Conversions between rows and models. Each `*_COLUMNS` list matches its reader.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use hookline_core::Error;
use hookline_core::id::{AppId, AttemptId, EndpointId, IngestRequestId, MessageId, SourceId};
use hookline_core::ingest::{IngestRequest, Source, Verdict};
use hookline_core::model::{
    Application, Attempt, Destination, Endpoint, EndpointFilter, EndpointSecret, ErrorKind,
    EventType, Message, MessageStatus, TriggerType,
};
use hookline_core::page::Page;
use hookline_core::sealed::Sealer;
use rusqlite::Row;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub fn time(millis: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(millis)
        .single()
        .unwrap_or_default()
}

pub fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("models serialize")
}

pub fn opt_json<T: Serialize>(value: &Option<T>) -> Option<String> {
    value.as_ref().map(json)
}

fn parse<T: DeserializeOwned>(text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn parse_opt<T: DeserializeOwned>(text: Option<String>) -> rusqlite::Result<Option<T>> {
    text.map(|t| parse(&t)).transpose()
}

/// Classifies a SQLite error: uniqueness violations become conflicts, the rest storage
/// failures. The one place this crate looks at error kinds.
pub fn classify(error: rusqlite::Error, what: &str) -> Error {
    match &error {
        rusqlite::Error::SqliteFailure(e, _)
            if e.code == rusqlite::ErrorCode::ConstraintViolation
                && (e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY) =>
        {
            Error::conflict(format!("{what} with that id or uid already exists"))
        }
        _ => Error::storage(error),
    }
}

/// Whether `error` is a foreign key's refusal: a row naming one that does not exist.
pub fn is_foreign_key_violation(error: &rusqlite::Error) -> bool {
    matches!(error, rusqlite::Error::SqliteFailure(e, _)
        if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

pub const APP_COLUMNS: &str =
    "app.id, app.uid, app.name, app.throttle_rate, app.metadata, app.created_at, app.updated_at";

pub fn app(row: &Row<'_>) -> rusqlite::Result<Application> {
    Ok(Application {
        id: AppId::from_string(row.get(0)?),
        uid: row.get(1)?,
        name: row.get(2)?,
        throttle_rate: row.get(3)?,
        metadata: parse(&row.get::<_, String>(4)?)?,
        created_at: time(row.get(5)?),
        updated_at: time(row.get(6)?),
    })
}

pub const ENDPOINT_COLUMNS: &str = "endpoint.id, endpoint.app_id, endpoint.uid, endpoint.url, \
    endpoint.description, endpoint.disabled, endpoint.throttle_rate, endpoint.event_types, \
    endpoint.channels, endpoint.metadata, endpoint.headers, endpoint.secrets, \
    endpoint.failing_since, endpoint.created_at, endpoint.updated_at";

/// Reads an endpoint whose columns start at `at`, its secrets as stored (sealed when the
/// store has a main key): enough for reads that use no secret (fan-out, destination
/// lists). Whatever hands an endpoint on to be signed with or shown opens it first
/// ([`open_endpoint`]).
pub fn endpoint_at(row: &Row<'_>, at: usize) -> rusqlite::Result<Endpoint> {
    let secrets: Vec<(String, Option<i64>)> = parse(&row.get::<_, String>(at + 11)?)?;
    Ok(Endpoint {
        id: EndpointId::from_string(row.get(at)?),
        app_id: AppId::from_string(row.get(at + 1)?),
        uid: row.get(at + 2)?,
        url: row.get(at + 3)?,
        description: row.get(at + 4)?,
        disabled: row.get(at + 5)?,
        throttle_rate: row.get(at + 6)?,
        event_types: parse_opt(row.get(at + 7)?)?,
        channels: parse_opt(row.get(at + 8)?)?,
        metadata: parse(&row.get::<_, String>(at + 9)?)?,
        headers: parse(&row.get::<_, String>(at + 10)?)?,
        secrets: secrets
            .into_iter()
            .map(|(key, expires_at)| EndpointSecret {
                key,
                expires_at: expires_at.map(time),
            })
            .collect(),
        failing_since: row.get::<_, Option<i64>>(at + 12)?.map(time),
        created_at: time(row.get(at + 13)?),
        updated_at: time(row.get(at + 14)?),
    })
}

/// Reads `id, disabled, event_types, channels`.
pub fn endpoint_filter(row: &Row<'_>) -> rusqlite::Result<EndpointFilter> {
    Ok(EndpointFilter {
        id: EndpointId::from_string(row.get(0)?),
        disabled: row.get(1)?,
        event_types: parse_opt(row.get(2)?)?,
        channels: parse_opt(row.get(3)?)?,
    })
}

pub fn endpoint(row: &Row<'_>) -> rusqlite::Result<Endpoint> {
    endpoint_at(row, 0)
}

/// An endpoint's secrets as stored: sealed by `sealer`, expiries in milliseconds.
pub fn secrets_json(sealer: &Sealer, secrets: &[EndpointSecret]) -> String {
    stored_secrets_json(&sealer.seal_secrets(secrets))
}

/// Secrets already in their stored form, as the column holds them.
fn stored_secrets_json(secrets: &[EndpointSecret]) -> String {
    let pairs: Vec<(&str, Option<i64>)> = secrets
        .iter()
        .map(|s| (s.key.as_str(), s.expires_at.map(millis)))
        .collect();
    json(&pairs)
}

/// `endpoint`, read as stored, with its secrets opened by `sealer`.
pub fn open_endpoint(sealer: &Sealer, mut endpoint: Endpoint) -> Result<Endpoint, Error> {
    endpoint.secrets = sealer.open_secrets(endpoint.secrets)?;
    Ok(endpoint)
}

/// A page of endpoints read as stored, with their secrets opened.
pub fn open_endpoints(sealer: &Sealer, page: Page<Endpoint>) -> Result<Page<Endpoint>, Error> {
    let data = page
        .data
        .into_iter()
        .map(|endpoint| open_endpoint(sealer, endpoint))
        .collect::<Result<_, _>>()?;
    Ok(Page { data, ..page })
}

/// The stored secrets column re-sealed under the current key, or `None` when every
/// secret already is (what a rotation skips).
pub fn resealed_secrets(sealer: &Sealer, stored: &str) -> Result<Option<String>, Error> {
    let pairs: Vec<(String, Option<i64>)> = parse(stored).map_err(Error::storage)?;
    let secrets: Vec<EndpointSecret> = pairs
        .into_iter()
        .map(|(key, expires_at)| EndpointSecret {
            key,
            expires_at: expires_at.map(time),
        })
        .collect();
    if sealer.secrets_are_current(&secrets) {
        return Ok(None);
    }
    let opened = sealer.open_secrets(secrets)?;
    Ok(Some(stored_secrets_json(&sealer.seal_secrets(&opened))))
}

/// A source's config as stored: its secrets sealed by `sealer`.
pub fn config_json(sealer: &Sealer, config: &serde_json::Value) -> String {
    json(&sealer.seal_config(config))
}

/// `source`, read as stored, with the secrets of its config opened by `sealer`.
pub fn open_source(sealer: &Sealer, mut source: Source) -> Result<Source, Error> {
    source.config = sealer.open_config(source.config)?;
    Ok(source)
}

/// The stored config column re-sealed under the current key, or `None` when every secret
/// of it already is.
pub fn resealed_config(sealer: &Sealer, stored: &str) -> Result<Option<String>, Error> {
    let config: serde_json::Value = parse(stored).map_err(Error::storage)?;
    if sealer.config_is_current(&config) {
        return Ok(None);
    }
    Ok(Some(config_json(sealer, &sealer.open_config(config)?)))
}

pub fn map_json(map: &BTreeMap<String, String>) -> String {
    json(map)
}

pub const EVENT_TYPE_COLUMNS: &str = "name, description, archived, deprecated, schemas, \
    feature_flag, created_at, updated_at";

pub fn event_type(row: &Row<'_>) -> rusqlite::Result<EventType> {
    Ok(EventType {
        name: row.get(0)?,
        description: row.get(1)?,
        archived: row.get(2)?,
        deprecated: row.get(3)?,
        schemas: parse_opt(row.get(4)?)?,
        feature_flag: row.get(5)?,
        created_at: time(row.get(6)?),
        updated_at: time(row.get(7)?),
    })
}

pub const MESSAGE_COLUMNS: &str = "message.id, message.app_id, message.event_id, \
    message.event_type, message.payload, message.channels, message.headers, \
    message.created_at";

pub fn message_at(row: &Row<'_>, at: usize) -> rusqlite::Result<Message> {
    Ok(Message {
        id: MessageId::from_string(row.get(at)?),
        app_id: AppId::from_string(row.get(at + 1)?),
        event_id: row.get(at + 2)?,
        event_type: row.get(at + 3)?,
        payload: row.get(at + 4)?,
        channels: parse_opt(row.get(at + 5)?)?,
        headers: parse_opt(row.get(at + 6)?)?.unwrap_or_default(),
        created_at: time(row.get(at + 7)?),
    })
}

/// A message's extra headers as stored: `NULL` when there are none, as for most messages.
pub fn headers_json(headers: &BTreeMap<String, String>) -> Option<String> {
    (!headers.is_empty()).then(|| map_json(headers))
}

pub fn message(row: &Row<'_>) -> rusqlite::Result<Message> {
    message_at(row, 0)
}

pub const DESTINATION_COLUMNS: &str = "destination.app_id, destination.msg_id, \
    destination.endpoint_id, destination.status, destination.next_attempt, \
    destination.attempts, destination.trigger_type, destination.updated_at";

pub fn destination_at(row: &Row<'_>, at: usize) -> rusqlite::Result<Destination> {
    Ok(Destination {
        app_id: AppId::from_string(row.get(at)?),
        msg_id: MessageId::from_string(row.get(at + 1)?),
        endpoint_id: EndpointId::from_string(row.get(at + 2)?),
        status: status(row.get(at + 3)?),
        next_attempt: row.get::<_, Option<i64>>(at + 4)?.map(time),
        attempts: row.get(at + 5)?,
        trigger: TriggerType::from_code(row.get(at + 6)?),
        updated_at: time(row.get(at + 7)?),
    })
}

fn status(code: i64) -> MessageStatus {
    MessageStatus::from_code(code).unwrap_or(MessageStatus::Fail)
}

pub const ATTEMPT_COLUMNS: &str = "attempt.id, attempt.app_id, attempt.msg_id, \
    attempt.endpoint_id, attempt.url, attempt.status, attempt.response_status_code, \
    attempt.response, attempt.response_headers, attempt.duration_ms, attempt.trigger_type, \
    attempt.error_kind, attempt.created_at, attempt.request_headers";

pub fn attempt(row: &Row<'_>) -> rusqlite::Result<Attempt> {
    Ok(Attempt {
        id: AttemptId::from_string(row.get(0)?),
        app_id: AppId::from_string(row.get(1)?),
        msg_id: MessageId::from_string(row.get(2)?),
        endpoint_id: EndpointId::from_string(row.get(3)?),
        url: row.get(4)?,
        status: status(row.get(5)?),
        response_status_code: row.get(6)?,
        response: row.get(7)?,
        response_headers: parse(&row.get::<_, String>(8)?)?,
        response_duration_ms: row.get(9)?,
        trigger_type: TriggerType::from_code(row.get(10)?),
        error_kind: row
            .get::<_, Option<String>>(11)?
            .and_then(|kind| ErrorKind::parse(&kind)),
        created_at: time(row.get(12)?),
        request_headers: parse(&row.get::<_, String>(13)?)?,
    })
}

pub const SOURCE_COLUMNS: &str = "source.id, source.uid, source.name, source.source_type, \
    source.config, source.metadata, source.app_id, source.token, source.previous_token, \
    source.previous_token_expires_at, source.created_at, source.updated_at";

/// Reads a source, the secrets of its config as stored ([`open_source`] opens them).
pub fn source(row: &Row<'_>) -> rusqlite::Result<Source> {
    Ok(Source {
        id: SourceId::from_string(row.get(0)?),
        uid: row.get(1)?,
        name: row.get(2)?,
        source_type: row.get(3)?,
        config: parse(&row.get::<_, String>(4)?)?,
        metadata: parse(&row.get::<_, String>(5)?)?,
        app_id: AppId::from_string(row.get(6)?),
        token: row.get(7)?,
        previous_token: row.get(8)?,
        previous_token_expires_at: row.get::<_, Option<i64>>(9)?.map(time),
        created_at: time(row.get(10)?),
        updated_at: time(row.get(11)?),
    })
}

pub const INGEST_REQUEST_COLUMNS: &str = "ingest_request.id, ingest_request.source_id, \
    ingest_request.seq, ingest_request.method, ingest_request.path, ingest_request.query, \
    ingest_request.headers, ingest_request.body, ingest_request.verdict, \
    ingest_request.status_code, ingest_request.reason_code, ingest_request.reason, \
    ingest_request.dedupe_key, ingest_request.event_type, ingest_request.msg_id, \
    ingest_request.created_at, ingest_request.body_size, ingest_request.dropped_before";

pub fn ingest_request(row: &Row<'_>) -> rusqlite::Result<IngestRequest> {
    let verdict: String = row.get(8)?;
    let body: Vec<u8> = row.get(7)?;
    Ok(IngestRequest {
        // Logged before sizes were kept: the body is whole.
        body_size: row
            .get::<_, Option<i64>>(16)?
            .unwrap_or(i64::try_from(body.len()).unwrap_or(i64::MAX)),
        dropped_before: row.get(17)?,
        id: IngestRequestId::from_string(row.get(0)?),
        source_id: SourceId::from_string(row.get(1)?),
        seq: row.get(2)?,
        method: row.get(3)?,
        path: row.get(4)?,
        query: row.get(5)?,
        headers: parse(&row.get::<_, String>(6)?)?,
        body,
        verdict: Verdict::parse(&verdict).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                8,
                rusqlite::types::Type::Text,
                format!("unknown verdict {verdict:?}").into(),
            )
        })?,
        status_code: row.get(9)?,
        reason_code: row.get(10)?,
        reason: row.get(11)?,
        dedupe_key: row.get(12)?,
        event_type: row.get(13)?,
        msg_id: row
            .get::<_, Option<String>>(14)?
            .map(MessageId::from_string),
        created_at: time(row.get(15)?),
    })
}
