//! The storage contract. Every backend (SQLite, PostgreSQL) implements [`Store`]; handlers
//! and workers hold an `Arc<dyn Store>`.
//!
//! Rules every backend keeps:
//! - A write that returns `Ok` is durable (committed and synced).
//! - [`Store::create_message`] stores the message, one destination per matching endpoint
//!   and the idempotency record in one transaction: nothing can be lost between accepting
//!   a message and queueing its deliveries.
//! - Times are kept to the millisecond (see [`crate::now`]).
//! - Lookups by "key" accept an id or a uid (for messages: an id or an `eventId`).
//! - Uniqueness violations come back as [`Error::Conflict`], missing rows as
//!   [`Error::NotFound`]; backends classify their own errors.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::id::{AppId, AttemptId, EndpointId, IngestRequestId, MessageId, SourceId};
use crate::ingest::{IngestRequest, IngestedRequest, NewIngestRequest, Source};
use crate::model::{
    Application, Attempt, Destination, Endpoint, EndpointStats, EventType, IdempotencyRecord,
    IdempotentResponse, Message, MessageStatus, Token, TriggerType,
};
use crate::page::{ListQuery, Page};
use crate::{Error, Result};

/// Filters of message lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFilter {
    pub channel: Option<String>,
    pub event_types: Option<Vec<String>>,
}

/// Filters of attempt lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptFilter {
    pub endpoint_id: Option<EndpointId>,
    pub msg_id: Option<MessageId>,
    pub status: Option<MessageStatus>,
    /// Hundreds of the response status (200 for 2xx); 0 for no answer.
    pub status_code_class: Option<i16>,
    pub channel: Option<String>,
    pub event_types: Option<Vec<String>>,
}

/// A delivery claimed by a worker: everything needed to make the attempt. Deliveries of
/// one claim may share their message and endpoint rows.
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    pub destination: Destination,
    pub message: Arc<Message>,
    pub endpoint: Arc<Endpoint>,
    pub app_uid: Option<String>,
}

/// The result of an attempt, to record with the delivery's new state.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub attempt: Attempt,
    /// The delivery's new status and next attempt.
    pub status: MessageStatus,
    pub next_attempt: Option<DateTime<Utc>>,
    /// Scheduled attempts made, counting this one.
    pub attempts: u32,
    /// Disable the endpoint (it answered 410, or it has failed for too long).
    pub disable_endpoint: bool,
    /// Set the endpoint's `failing_since` if unset (exhausted), or clear it (success).
    pub endpoint_failing: Option<bool>,
}

/// A message to create, with the idempotency record to commit alongside.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub message: Message,
    /// Deliver only to this endpoint (send-example); `None` for normal fan-out.
    pub only_endpoint: Option<EndpointId>,
    pub idempotency: Option<IdempotencyRecord>,
}

/// What [`Store::create_message`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedMessage {
    /// The endpoints a delivery was queued for.
    pub endpoints: Vec<EndpointId>,
}

/// What opening a store does about migrations that have not run yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrations {
    /// Apply them (the default of `hookline serve` and what `hookline migrate` does).
    Apply,
    /// Refuse to open until someone has applied them (`hookline serve --no-migrate`).
    Require,
}

/// The error for a database whose schema is not the one this build knows: behind it
/// (`Migrations::Require`) or ahead of it (migrated by a newer build).
pub fn schema_mismatch(found: usize, known: usize) -> Error {
    let detail = if found < known {
        format!(
            "the database schema is at version {found} and this hookline needs {known}: \
             run `hookline migrate` first"
        )
    } else {
        format!(
            "the database schema is at version {found}, newer than this hookline knows \
             ({known}): upgrade hookline"
        )
    };
    Error::BadRequest {
        code: "schema_mismatch",
        detail,
    }
}

#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    // Applications.
    async fn create_app(&self, app: &Application) -> Result<()>;
    async fn get_app(&self, key: &str) -> Result<Application>;
    async fn list_apps(&self, query: &ListQuery) -> Result<Page<Application>>;
    async fn update_app(&self, app: &Application) -> Result<()>;
    async fn delete_app(&self, id: &AppId) -> Result<()>;

    // Endpoints.
    async fn create_endpoint(&self, endpoint: &Endpoint) -> Result<()>;
    async fn get_endpoint(&self, app: &AppId, key: &str) -> Result<Endpoint>;
    async fn list_endpoints(&self, app: &AppId, query: &ListQuery) -> Result<Page<Endpoint>>;
    /// Writes the endpoint's settings. `disabled` is written only when `set_disabled` (the
    /// caller means to change it), so a copy read before the engine disabled the endpoint
    /// cannot re-enable it. `failing_since` belongs to the delivery engine and is not
    /// written, except that re-enabling a disabled endpoint clears it.
    async fn update_endpoint(&self, endpoint: &Endpoint, set_disabled: bool) -> Result<()>;
    async fn delete_endpoint(&self, app: &AppId, id: &EndpointId) -> Result<()>;
    async fn endpoint_stats(
        &self,
        app: &AppId,
        endpoint: &EndpointId,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<EndpointStats>;

    // Event types.
    async fn create_event_type(&self, event_type: &EventType) -> Result<()>;
    async fn get_event_type(&self, name: &str) -> Result<EventType>;
    async fn list_event_types(
        &self,
        query: &ListQuery,
        include_archived: bool,
    ) -> Result<Page<EventType>>;
    async fn update_event_type(&self, event_type: &EventType) -> Result<()>;
    async fn delete_event_type(&self, name: &str) -> Result<()>;

    // Messages.
    async fn create_message(&self, new: NewMessage) -> Result<CreatedMessage>;
    async fn get_message(&self, app: &AppId, key: &str) -> Result<Message>;
    async fn list_messages(
        &self,
        app: &AppId,
        filter: &MessageFilter,
        query: &ListQuery,
    ) -> Result<Page<Message>>;
    async fn expunge_message(&self, app: &AppId, id: &MessageId) -> Result<()>;

    // Deliveries and attempts.
    /// Leases up to `limit` due deliveries to `owner` until `now + lease`. Deliveries
    /// whose lease expired are due again. Deliveries to disabled endpoints are skipped.
    async fn claim_due(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<DeliveryJob>>;
    /// Gives claimed deliveries back without an attempt (their endpoint was busy, or the
    /// node is shutting down): their leases end and they fall due again at `retry_at`.
    /// Deliveries no longer queued are left alone.
    async fn release(
        &self,
        deliveries: Vec<(MessageId, EndpointId)>,
        retry_at: DateTime<Utc>,
    ) -> Result<()>;
    /// Records attempts and releases their leases, in one transaction. The batch is
    /// shared, so that a caller can try it again without copying it.
    async fn record_outcomes(&self, outcomes: Arc<[AttemptOutcome]>) -> Result<()>;
    /// When the next delivery falls due, if any is queued.
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>>;
    /// Queues one manual attempt of a message to an endpoint (resend).
    async fn requeue(
        &self,
        app: &AppId,
        msg: &MessageId,
        endpoint: &EndpointId,
        trigger: TriggerType,
    ) -> Result<()>;
    /// Queues one manual attempt of every failed delivery to `endpoint` whose message was
    /// created in `[since, until]`; returns how many.
    async fn recover(
        &self,
        app: &AppId,
        endpoint: &EndpointId,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<u64>;
    async fn get_destination(
        &self,
        app: &AppId,
        msg: &MessageId,
        endpoint: &EndpointId,
    ) -> Result<Destination>;
    /// Deliveries of a message, newest endpoint first, paged by endpoint id.
    async fn list_destinations(
        &self,
        app: &AppId,
        msg: &MessageId,
        query: &ListQuery,
    ) -> Result<Page<(Destination, Endpoint)>>;
    /// Messages sent to an endpoint with their delivery, paged by message id.
    async fn list_endpoint_messages(
        &self,
        app: &AppId,
        endpoint: &EndpointId,
        status: Option<MessageStatus>,
        filter: &MessageFilter,
        query: &ListQuery,
    ) -> Result<Page<(Message, Destination)>>;
    async fn list_attempts(
        &self,
        app: &AppId,
        filter: &AttemptFilter,
        query: &ListQuery,
    ) -> Result<Page<Attempt>>;
    async fn get_attempt(&self, app: &AppId, msg: &MessageId, id: &AttemptId) -> Result<Attempt>;
    async fn expunge_attempt(&self, app: &AppId, msg: &MessageId, id: &AttemptId) -> Result<()>;

    // Idempotency.
    async fn get_idempotent(
        &self,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotentResponse>>;
    async fn put_idempotent(&self, record: &IdempotencyRecord) -> Result<()>;
    /// Deletes the idempotency records that expired before `now`; returns how many. Nodes
    /// sharing a database take turns, as for [`Store::purge_ingest_requests`].
    async fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<u64>;

    // Sources (the receiving side).
    /// Stores the source and creates its hidden application (`source.app_id`) in the
    /// same transaction. The hidden application never appears in [`Store::list_apps`].
    async fn create_source(&self, source: &Source) -> Result<()>;
    async fn get_source(&self, key: &str) -> Result<Source>;
    /// The source whose current token is `token`, or whose previous token is and has not
    /// expired at `now`.
    async fn find_source_by_token(&self, token: &str, now: DateTime<Utc>)
    -> Result<Option<Source>>;
    async fn list_sources(&self, query: &ListQuery) -> Result<Page<Source>>;
    /// Writes everything but `app_id` and `created_at`.
    async fn update_source(&self, source: &Source) -> Result<()>;
    /// Deletes the source, its request log and its hidden application with everything in it.
    async fn delete_source(&self, id: &SourceId) -> Result<()>;

    // Received requests.
    /// Stores a received request and, if it is accepted and no accepted request of the
    /// same source carries its dedupe key since `dedupe_since`, its forwarding messages,
    /// all in one transaction. Assigns `seq` in commit order per source.
    async fn ingest(&self, new: NewIngestRequest) -> Result<IngestedRequest>;
    async fn get_ingest_request(
        &self,
        source: &SourceId,
        id: &IngestRequestId,
    ) -> Result<IngestRequest>;
    /// The source's request log, paged by id.
    async fn list_ingest_requests(
        &self,
        source: &SourceId,
        query: &ListQuery,
    ) -> Result<Page<IngestRequest>>;
    /// Up to `limit` requests of the source with `seq > after`, in `seq` order: what live
    /// streams read.
    async fn ingest_requests_after(
        &self,
        source: &SourceId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<IngestRequest>>;
    /// Deletes logged requests created before `before` (retention); returns how many.
    /// Nodes sharing a database take turns: while one purges, the others' calls return 0.
    async fn purge_ingest_requests(&self, before: DateTime<Utc>) -> Result<u64>;

    // Tokens.
    async fn put_token(&self, token: &Token) -> Result<()>;
    async fn find_token(&self, hash: &str) -> Result<Option<Token>>;
    async fn delete_token(&self, hash: &str) -> Result<()>;
    /// Whether an admin token has ever been stored.
    async fn has_admin_token(&self) -> Result<bool>;
}
