//! Conversions between rows and models. Each `*_COLUMNS` list matches its reader, which
//! takes the columns in that order from a [`Columns`] cursor, so that a query selecting
//! several lists one after the other reads them with no offsets to keep in step.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use hookline_core::id::{AppId, AttemptId, EndpointId, IngestRequestId, MessageId, SourceId};
use hookline_core::ingest::{IngestRequest, Source, Verdict};
use hookline_core::model::{
    Application, Attempt, Destination, Endpoint, EndpointSecret, ErrorKind, EventType, Message,
    MessageStatus, TriggerType,
};
use hookline_core::page::Page;
use hookline_core::sealed::Sealer;
use hookline_core::{Error, Result};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, Json};

/// A time as stored: to the millisecond, as every store keeps it (see `hookline_core::clock`),
/// so that what is read back equals what a caller computed, whatever its precision.
pub fn ms(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(3)
}

/// The stored form of a status or trigger: its wire integer, which is small.
pub fn code(code: i64) -> i16 {
    i16::try_from(code).expect("status and trigger codes fit in a smallint")
}

fn status(code: i16) -> MessageStatus {
    MessageStatus::from_code(i64::from(code)).unwrap_or(MessageStatus::Fail)
}

/// An endpoint's secrets as stored: sealed by `sealer`, expiries to the millisecond.
pub fn secrets(sealer: &Sealer, secrets: &[EndpointSecret]) -> Json<Vec<EndpointSecret>> {
    Json(
        sealer
            .seal_secrets(secrets)
            .into_iter()
            .map(|secret| EndpointSecret {
                key: secret.key,
                expires_at: secret.expires_at.map(ms),
            })
            .collect(),
    )
}

/// `endpoint`, read as stored, with its secrets opened by `sealer`.
pub fn open_endpoint(sealer: &Sealer, mut endpoint: Endpoint) -> Result<Endpoint> {
    endpoint.secrets = sealer.open_secrets(endpoint.secrets)?;
    Ok(endpoint)
}

/// A page of endpoints read as stored, with their secrets opened.
pub fn open_endpoints(sealer: &Sealer, page: Page<Endpoint>) -> Result<Page<Endpoint>> {
    let data = page
        .data
        .into_iter()
        .map(|endpoint| open_endpoint(sealer, endpoint))
        .collect::<Result<_>>()?;
    Ok(Page { data, ..page })
}

/// A source's config as stored: its secrets sealed by `sealer`.
pub fn config(sealer: &Sealer, config: &serde_json::Value) -> serde_json::Value {
    sealer.seal_config(config)
}

/// `source`, read as stored, with the secrets of its config opened by `sealer`.
pub fn open_source(sealer: &Sealer, mut source: Source) -> Result<Source> {
    source.config = sealer.open_config(source.config)?;
    Ok(source)
}

/// The stored secrets column re-sealed under the current key, or `None` when every
/// secret already is (what a rotation skips).
pub fn resealed_secrets(
    sealer: &Sealer,
    stored: Vec<EndpointSecret>,
) -> Result<Option<Json<Vec<EndpointSecret>>>> {
    if sealer.secrets_are_current(&stored) {
        return Ok(None);
    }
    // Opened, then sealed afresh: `secrets` seals them again.
    Ok(Some(secrets(sealer, &sealer.open_secrets(stored)?)))
}

/// The stored config column re-sealed under the current key, or `None` when every secret
/// of it already is.
pub fn resealed_config(
    sealer: &Sealer,
    stored: serde_json::Value,
) -> Result<Option<serde_json::Value>> {
    if sealer.config_is_current(&stored) {
        return Ok(None);
    }
    Ok(Some(sealer.seal_config(&sealer.open_config(stored)?)))
}

/// Reads a row's columns in order.
pub struct Columns<'a> {
    row: &'a Row,
    next: usize,
}

impl<'a> Columns<'a> {
    pub fn new(row: &'a Row) -> Self {
        Self { row, next: 0 }
    }

    /// The next column's value.
    pub fn take<T: FromSql<'a>>(&mut self) -> Result<T> {
        let value = self.row.try_get(self.next).map_err(Error::storage)?;
        self.next += 1;
        Ok(value)
    }

    fn json<T: serde::de::DeserializeOwned>(&mut self) -> Result<T> {
        Ok(self.take::<Json<T>>()?.0)
    }

    fn opt_json<T: serde::de::DeserializeOwned>(&mut self) -> Result<Option<T>> {
        Ok(self.take::<Option<Json<T>>>()?.map(|json| json.0))
    }

    fn throttle_rate(&mut self) -> Result<Option<u16>> {
        self.take::<Option<i32>>()?
            .map(u16::try_from)
            .transpose()
            .map_err(Error::storage)
    }
}

pub const APP_COLUMNS: &str =
    "app.id, app.uid, app.name, app.throttle_rate, app.metadata, app.created_at, app.updated_at";

pub fn app(columns: &mut Columns<'_>) -> Result<Application> {
    Ok(Application {
        id: AppId::from_string(columns.take()?),
        uid: columns.take()?,
        name: columns.take()?,
        throttle_rate: columns.throttle_rate()?,
        metadata: columns.json()?,
        created_at: columns.take()?,
        updated_at: columns.take()?,
    })
}

pub const ENDPOINT_COLUMNS: &str = "endpoint.id, endpoint.app_id, endpoint.uid, endpoint.url, \
    endpoint.description, endpoint.disabled, endpoint.throttle_rate, endpoint.event_types, \
    endpoint.channels, endpoint.metadata, endpoint.headers, endpoint.secrets, \
    endpoint.failing_since, endpoint.created_at, endpoint.updated_at";

/// Reads an endpoint, its secrets as stored (sealed when the store has a main key):
/// enough for reads that use no secret (fan-out, destination lists). Whatever hands an
/// endpoint on to be signed with or shown opens it first ([`open_endpoint`]).
pub fn endpoint(columns: &mut Columns<'_>) -> Result<Endpoint> {
    Ok(Endpoint {
        id: EndpointId::from_string(columns.take()?),
        app_id: AppId::from_string(columns.take()?),
        uid: columns.take()?,
        url: columns.take()?,
        description: columns.take()?,
        disabled: columns.take()?,
        throttle_rate: columns.throttle_rate()?,
        event_types: columns.take()?,
        channels: columns.take()?,
        metadata: columns.json::<BTreeMap<String, String>>()?,
        headers: columns.json::<BTreeMap<String, String>>()?,
        secrets: columns.json()?,
        failing_since: columns.take()?,
        created_at: columns.take()?,
        updated_at: columns.take()?,
    })
}

pub const EVENT_TYPE_COLUMNS: &str = "event_type.name, event_type.description, \
    event_type.archived, event_type.deprecated, event_type.schemas, event_type.feature_flag, \
    event_type.created_at, event_type.updated_at";

pub fn event_type(columns: &mut Columns<'_>) -> Result<EventType> {
    Ok(EventType {
        name: columns.take()?,
        description: columns.take()?,
        archived: columns.take()?,
        deprecated: columns.take()?,
        schemas: columns.opt_json()?,
        feature_flag: columns.take()?,
        created_at: columns.take()?,
        updated_at: columns.take()?,
    })
}

pub const MESSAGE_COLUMNS: &str = "message.id, message.app_id, message.event_id, \
    message.event_type, message.payload, message.channels, message.headers, \
    message.created_at";

pub fn message(columns: &mut Columns<'_>) -> Result<Message> {
    Ok(Message {
        id: MessageId::from_string(columns.take()?),
        app_id: AppId::from_string(columns.take()?),
        event_id: columns.take()?,
        event_type: columns.take()?,
        payload: columns.take()?,
        channels: columns.take()?,
        headers: columns.opt_json()?.unwrap_or_default(),
        created_at: columns.take()?,
    })
}

/// A message's extra headers as stored: `NULL` when there are none, as for most messages.
pub fn message_headers(
    headers: &BTreeMap<String, String>,
) -> Option<Json<&BTreeMap<String, String>>> {
    (!headers.is_empty()).then_some(Json(headers))
}

pub const DESTINATION_COLUMNS: &str = "destination.app_id, destination.msg_id, \
    destination.endpoint_id, destination.status, destination.next_attempt, \
    destination.attempts, destination.trigger_type, destination.updated_at";

pub fn destination(columns: &mut Columns<'_>) -> Result<Destination> {
    Ok(Destination {
        app_id: AppId::from_string(columns.take()?),
        msg_id: MessageId::from_string(columns.take()?),
        endpoint_id: EndpointId::from_string(columns.take()?),
        status: status(columns.take()?),
        next_attempt: columns.take()?,
        attempts: u32::try_from(columns.take::<i32>()?).map_err(Error::storage)?,
        trigger: TriggerType::from_code(i64::from(columns.take::<i16>()?)),
        updated_at: columns.take()?,
    })
}

pub const ATTEMPT_COLUMNS: &str = "attempt.id, attempt.app_id, attempt.msg_id, \
    attempt.endpoint_id, attempt.url, attempt.status, attempt.response_status_code, \
    attempt.response, attempt.response_headers, attempt.duration_ms, attempt.trigger_type, \
    attempt.error_kind, attempt.created_at, attempt.request_headers";

pub fn attempt(columns: &mut Columns<'_>) -> Result<Attempt> {
    Ok(Attempt {
        id: AttemptId::from_string(columns.take()?),
        app_id: AppId::from_string(columns.take()?),
        msg_id: MessageId::from_string(columns.take()?),
        endpoint_id: EndpointId::from_string(columns.take()?),
        url: columns.take()?,
        status: status(columns.take()?),
        response_status_code: columns.take()?,
        response: columns.take()?,
        response_headers: columns.json()?,
        response_duration_ms: columns.take()?,
        trigger_type: TriggerType::from_code(i64::from(columns.take::<i16>()?)),
        error_kind: columns
            .take::<Option<String>>()?
            .and_then(|kind| ErrorKind::parse(&kind)),
        created_at: columns.take()?,
        request_headers: columns.json()?,
    })
}

pub const SOURCE_COLUMNS: &str = "source.id, source.uid, source.name, source.source_type, \
    source.config, source.metadata, source.app_id, source.token, source.previous_token, \
    source.previous_token_expires_at, source.created_at, source.updated_at";

/// Reads a source, the secrets of its config as stored ([`open_source`] opens them).
pub fn source(columns: &mut Columns<'_>) -> Result<Source> {
    Ok(Source {
        id: SourceId::from_string(columns.take()?),
        uid: columns.take()?,
        name: columns.take()?,
        source_type: columns.take()?,
        config: columns.take()?,
        metadata: columns.json()?,
        app_id: AppId::from_string(columns.take()?),
        token: columns.take()?,
        previous_token: columns.take()?,
        previous_token_expires_at: columns.take()?,
        created_at: columns.take()?,
        updated_at: columns.take()?,
    })
}

pub const INGEST_REQUEST_COLUMNS: &str = "ingest_request.id, ingest_request.source_id, \
    ingest_request.seq, ingest_request.method, ingest_request.path, ingest_request.query, \
    ingest_request.headers, ingest_request.body, ingest_request.verdict, \
    ingest_request.status_code, ingest_request.reason_code, ingest_request.reason, \
    ingest_request.dedupe_key, ingest_request.event_type, ingest_request.msg_id, \
    ingest_request.created_at, ingest_request.body_size, ingest_request.dropped_before";

pub fn ingest_request(columns: &mut Columns<'_>) -> Result<IngestRequest> {
    let mut request = IngestRequest {
        id: IngestRequestId::from_string(columns.take()?),
        source_id: SourceId::from_string(columns.take()?),
        seq: columns.take()?,
        method: columns.take()?,
        path: columns.take()?,
        query: columns.take()?,
        headers: columns.json()?,
        body: columns.take()?,
        verdict: {
            let verdict: String = columns.take()?;
            Verdict::parse(&verdict).ok_or_else(|| {
                Error::storage(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("unknown verdict {verdict:?}"),
                ))
            })?
        },
        status_code: columns.take()?,
        reason_code: columns.take()?,
        reason: columns.take()?,
        dedupe_key: columns.take()?,
        event_type: columns.take()?,
        msg_id: columns
            .take::<Option<String>>()?
            .map(MessageId::from_string),
        created_at: columns.take()?,
        body_size: 0,
        dropped_before: 0,
    };
    // `NULL`: logged before sizes were kept, so the body is whole.
    request.body_size = columns
        .take::<Option<i64>>()?
        .unwrap_or(i64::try_from(request.body.len()).unwrap_or(i64::MAX));
    request.dropped_before = columns.take()?;
    Ok(request)
}

/// Reads a whole row with `read`.
pub fn read<T>(row: &Row, read: impl FnOnce(&mut Columns<'_>) -> Result<T>) -> Result<T> {
    read(&mut Columns::new(row))
}
