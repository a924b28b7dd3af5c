//! The storage contract, split by role. Every backend (SQLite, PostgreSQL) implements each
//! role trait; [`Store`] is all of them at once, what the server holds as `Arc<dyn Store>`.
//! A part that needs one role takes only that one: the delivery engine sees a
//! [`DeliveryQueue`], nothing else.
//!
//! | role | what |
//! | --- | --- |
//! | [`ResourceStore`] | applications, endpoints, event types |
//! | [`MessageStore`] | messages, their deliveries and attempts, resend and recover |
//! | [`DeliveryQueue`] | claiming due deliveries and recording their outcomes |
//! | [`IngestStore`] | sources and the log of the requests they receive |
//! | [`TokenStore`] | API tokens |
//! | [`IdempotencyStore`] | answers replayed for repeated `idempotency-key`s |
//! | [`JobStore`] | long-running AI jobs, their due polls, and webhooks kept for them |
//!
//! Rules every backend keeps:
//! - A write that returns `Ok` is durable (committed and synced).
//! - [`MessageStore::create_message`] stores the message, one destination per matching endpoint
//!   and the idempotency record in one transaction: nothing can be lost between accepting
//!   a message and queueing its deliveries.
//! - Times are kept to the millisecond (see [`crate::clock`]). A store never reads the
//!   clock: every time it needs is an argument.
//! - Lookups by "key" accept an id or a uid (for messages: an id or an `eventId`).
//! - Uniqueness violations come back as [`Error::Conflict`], missing rows as
//!   [`Error::NotFound`]; backends classify their own errors.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};

use crate::error::Code;
use crate::id::{AppId, AttemptId, EndpointId, IngestRequestId, JobId, MessageId, SourceId};
use crate::ingest::{IngestRequest, IngestedRequest, NewIngestRequest, Source};
use crate::job::{Job, JobStatus, Observation, Provider};
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
    /// The application's `throttle_rate`: its deliveries a second across all its
    /// endpoints, in total over every node. The engine enforces it next to the
    /// endpoint's own rate, so the claim carries it rather than a read per delivery.
    pub app_throttle_rate: Option<u16>,
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
    /// Messages the attempt gives rise to (operational events about it), created with
    /// their deliveries in the outcome's own transaction: a crash then loses both or
    /// neither, never the event of an outcome that was recorded. A message of an
    /// application deleted meanwhile is dropped, as an attempt of a deleted message is.
    pub messages: Vec<NewMessage>,
}

/// A message to create, with the idempotency record to commit alongside.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub message: Message,
    /// Deliver only to this endpoint (send-example); `None` for normal fan-out.
    pub only_endpoint: Option<EndpointId>,
    pub idempotency: Option<IdempotencyRecord>,
    /// When the payload is removed ([`MessageStore::expire_payloads`]); `None` keeps it
    /// until expunged. The API sets it from `payloadRetentionPeriod` or the server's
    /// retention.
    pub payload_expires_at: Option<DateTime<Utc>>,
    /// Lease the new deliveries at once to the worker that will make them, as a claim
    /// would (`None`: they are queued due, for any worker's claim).
    pub lease: Option<CreateLease>,
}

/// Deliveries leased as they are created ([`NewMessage::lease`]): the worker of the node
/// that created the message makes them without claiming them. Leased rows are what a
/// claim would have left: sending, held by `owner` until `until`, and due again then
/// should no attempt be recorded, so that nothing is lost if the worker dies first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateLease {
    pub owner: String,
    pub until: DateTime<Utc>,
    /// At most this many deliveries are leased (the worker's free room); the rest, and
    /// those of disabled endpoints, are queued due as without a lease.
    pub most: usize,
}

impl CreateLease {
    /// The lease for a message's delivery to an endpoint (`disabled` or not) once
    /// `leased` of its deliveries are, if it takes this one too: the one rule of every
    /// backend.
    pub fn takes(&self, disabled: bool, leased: usize) -> Option<&Self> {
        (!disabled && leased < self.most).then_some(self)
    }

    /// The row of `message`'s delivery to `endpoint` under this lease: what a claim of it
    /// would have left (sending, due again when the lease ends).
    pub fn destination(&self, message: &Message, endpoint: &EndpointId) -> Destination {
        Destination {
            app_id: message.app_id.clone(),
            msg_id: message.id.clone(),
            endpoint_id: endpoint.clone(),
            status: MessageStatus::Sending,
            // As stored: both backends keep times to the millisecond.
            next_attempt: Some(self.until.trunc_subsecs(3)),
            attempts: 0,
            trigger: TriggerType::Scheduled,
            updated_at: message.created_at,
        }
    }
}

/// What [`MessageStore::create_message`] did.
#[derive(Debug, Clone)]
pub struct CreatedMessage {
    /// The endpoints a delivery was queued for.
    pub endpoints: Vec<EndpointId>,
    /// The deliveries leased to [`NewMessage::lease`]'s owner, in the order of
    /// `endpoints`, ready to make: what a claim of them would have returned.
    pub leased: Vec<DeliveryJob>,
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
    Error::Setup {
        code: Code::SchemaMismatch,
        detail,
    }
}

/// Applications, their endpoints, and event types: the resources of the sending API.
#[async_trait]
pub trait ResourceStore: Send + Sync {
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
}

/// Messages with their deliveries (one per endpoint) and attempts, as the API reads and
/// changes them.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Stores the message with a delivery to every endpoint it is for, and its
    /// idempotency record. `Conflict` if its `eventId` is taken, `IdempotencyConflict` if
    /// its key is, `NotFound("application")` if its application does not exist (the API
    /// leaves that check to this call); any of them writes nothing.
    async fn create_message(&self, new: NewMessage) -> Result<CreatedMessage>;
    async fn get_message(&self, app: &AppId, key: &str) -> Result<Message>;
    async fn list_messages(
        &self,
        app: &AppId,
        filter: &MessageFilter,
        query: &ListQuery,
    ) -> Result<Page<Message>>;
    async fn expunge_message(&self, app: &AppId, id: &MessageId) -> Result<()>;
    /// Removes the payloads whose expiry ([`NewMessage::payload_expires_at`]) is before
    /// `now`, as [`MessageStore::expunge_message`] does (queued deliveries of them fail:
    /// they cannot go out without it); returns how many. Nodes sharing a database take
    /// turns, as for [`IngestStore::purge_ingest_requests`].
    async fn expire_payloads(&self, now: DateTime<Utc>) -> Result<u64>;

    /// Queues one manual attempt of a message to an endpoint (resend), due at `now`.
    async fn requeue(
        &self,
        app: &AppId,
        msg: &MessageId,
        endpoint: &EndpointId,
        trigger: TriggerType,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Queues one manual attempt, due at `now`, of every failed delivery to `endpoint`
    /// whose message was created in `[since, until]`; returns how many.
    async fn recover(
        &self,
        app: &AppId,
        endpoint: &EndpointId,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
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
}

/// The queue of deliveries: all the delivery engine needs of storage.
#[async_trait]
pub trait DeliveryQueue: Send + Sync + std::fmt::Debug {
    /// Leases up to `limit` due deliveries to `owner` until `now + lease`. Deliveries
    /// whose lease expired are due again. Deliveries to disabled endpoints are skipped.
    async fn claim_due(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<DeliveryJob>> {
        self.claim_due_skipping(owner, now, lease, limit, &[]).await
    }

    /// [`DeliveryQueue::claim_due`], passing over the deliveries of `skip_apps`: the apps a
    /// worker holds its share of already. Due deliveries are taken oldest first, so
    /// without this one app's backlog, however long, would stand before every other
    /// app's deliveries in each claim.
    async fn claim_due_skipping(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
        skip_apps: &[AppId],
    ) -> Result<Vec<DeliveryJob>>;
    /// Gives claimed deliveries back without an attempt (their endpoint was busy, or the
    /// node is shutting down): their leases end and they fall due again at `retry_at`.
    /// Deliveries no longer queued are left alone.
    async fn release(
        &self,
        deliveries: Vec<(MessageId, EndpointId)>,
        retry_at: DateTime<Utc>,
    ) -> Result<()>;
    /// Records attempts and releases their leases, in one transaction, with the messages
    /// the outcomes carry ([`AttemptOutcome::messages`]) and their deliveries. The batch
    /// is shared, so that a caller can try it again without copying it. Endpoints'
    /// failing state changes as [`EndpointChange::fold`] says.
    async fn record_outcomes(&self, outcomes: Arc<[AttemptOutcome]>) -> Result<()>;
    /// The least time between the starts of two claims of one claim loop when the first
    /// was not full (it took everything due it could), whatever woke the loop again. Zero
    /// claims at every wake-up; more lets a claim take what several commits queued, where
    /// each claim costs the store a round trip and a scan and every commit that queues
    /// deliveries wakes every node's claim loops. The engine spaces each worker's claims
    /// by this times the number of live workers.
    fn claim_spacing(&self) -> Duration {
        Duration::ZERO
    }
    /// When the next delivery falls due, if any is queued; leases running at `now` hide
    /// their deliveries.
    async fn next_due(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>>;
    /// How many deliveries are due, leased and scheduled at `now` (for `/metrics`).
    async fn queue_depth(&self, now: DateTime<Utc>) -> Result<crate::metrics::QueueDepth>;
    /// Announces that the worker `node` is alive, and returns how many workers (itself
    /// included, so at least one) announced themselves within the last `ttl`. Throttle
    /// rates hold in total across the workers sharing the queue: each enforces its share,
    /// the rate divided by this count. Liveness is judged by the store's own clock, so
    /// that skew between nodes cannot make one look dead or alive.
    ///
    /// The default is for a store that only one worker can use at a time (SQLite): one.
    async fn heartbeat(&self, node: &str, ttl: Duration) -> Result<usize> {
        let _ = (node, ttl);
        Ok(1)
    }

    /// Ends every lease held by `owner`, a node that is starting and so holds nothing in
    /// flight: what it had claimed before it died falls due at once rather than when the
    /// leases would have run out. Returns how many. Node names must be unique among live
    /// nodes (`HOOKLINE_NODE_ID`).
    async fn release_owned(&self, owner: &str) -> Result<u64>;
}

/// Sources and the requests they receive.
#[async_trait]
pub trait IngestStore: Send + Sync {
    /// Stores the source and creates its hidden application (`source.app_id`) in the
    /// same transaction. The hidden application never appears in
    /// [`ResourceStore::list_apps`].
    async fn create_source(&self, source: &Source) -> Result<()>;
    async fn get_source(&self, key: &str) -> Result<Source>;
    /// The source whose hidden application `app` is, if it is one.
    async fn source_of_app(&self, app: &AppId) -> Result<Option<SourceId>>;
    /// The source whose current token is `token`, or whose previous token is and has not
    /// expired at `now`.
    async fn find_source_by_token(&self, token: &str, now: DateTime<Utc>)
    -> Result<Option<Source>>;
    async fn list_sources(&self, query: &ListQuery) -> Result<Page<Source>>;
    /// Writes everything but `app_id` and `created_at`.
    async fn update_source(&self, source: &Source) -> Result<()>;
    /// Deletes the source, its request log and its hidden application with everything in it.
    async fn delete_source(&self, id: &SourceId) -> Result<()>;

    /// Stores a received request and, if it is accepted and no accepted request of the
    /// same source carries its dedupe key since `dedupe_since`, its forwarding messages,
    /// all in one transaction. Assigns `seq` in commit order per source. A refused
    /// request is counted against `refused_cap` in the database, and not stored once its
    /// window's cap is reached ([`IngestedRequest::logged`]).
    async fn ingest(&self, new: NewIngestRequest) -> Result<IngestedRequest>;
    async fn get_ingest_request(
        &self,
        source: &SourceId,
        id: &IngestRequestId,
    ) -> Result<IngestRequest>;
    /// The source's request log, paged by id. The page ends early, not `done`, once its
    /// bodies come to `body_budget` bytes (it holds one request at least): bodies go up to
    /// the body limit, so a page of `limit` of them could take hundreds of megabytes.
    /// Sizes are read before bodies, so the bodies past the budget are never loaded.
    async fn list_ingest_requests(
        &self,
        source: &SourceId,
        query: &ListQuery,
        body_budget: usize,
    ) -> Result<Page<IngestRequest>>;
    /// Up to `limit` requests of the source with `seq > after`, in `seq` order, ending
    /// early once their bodies come to `body_budget` bytes (one request at least): what
    /// live streams read.
    async fn ingest_requests_after(
        &self,
        source: &SourceId,
        after: i64,
        limit: usize,
        body_budget: usize,
    ) -> Result<Vec<IngestRequest>>;
    /// Deletes logged requests created before `before` (retention); returns how many.
    /// Nodes sharing a database take turns: while one purges, the others' calls return 0.
    async fn purge_ingest_requests(&self, before: DateTime<Utc>) -> Result<u64>;
}

/// API bearer tokens, by the SHA-256 of their text.
#[async_trait]
pub trait TokenStore: Send + Sync {
    async fn put_token(&self, token: &Token) -> Result<()>;
    async fn find_token(&self, hash: &str) -> Result<Option<Token>>;
    async fn delete_token(&self, hash: &str) -> Result<()>;
    /// Whether an admin token has ever been stored.
    async fn has_admin_token(&self) -> Result<bool>;
}

/// The answers to POSTs with an `idempotency-key`, kept for replay.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    async fn get_idempotent(
        &self,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotentResponse>>;
    async fn put_idempotent(&self, record: &IdempotencyRecord) -> Result<()>;
    /// Writes `record` (a [pending](IdempotentResponse::pending) placeholder) unless a
    /// live record of its key is there
    /// ([`Code::IdempotencyConflict`](crate::Code::IdempotencyConflict)). Only the answer
    /// of the request that claimed it replaces it ([`NewJob::replaces_pending`]).
    async fn claim_idempotent(&self, record: &IdempotencyRecord, now: DateTime<Utc>) -> Result<()>;
    /// Deletes the pending placeholder of `key`, if it is still one: its request failed,
    /// and a retry may carry it out.
    async fn release_pending(&self, key: &str) -> Result<()>;
    /// Deletes the idempotency records that expired before `now`; returns how many. Nodes
    /// sharing a database take turns, as for [`IngestStore::purge_ingest_requests`].
    async fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<u64>;
}

/// A job to store, with the `job.created` message and idempotency record committed with it.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub job: Job,
    /// When it is first polled (or, for a job that is not polled, its deadline).
    pub poll_due: DateTime<Utc>,
    pub created_message: NewMessage,
    /// The record of the creating request; the store writes the stored job (after the
    /// observations below) as its body, so a replay answers what the request answered.
    pub idempotency: Option<IdempotencyRecord>,
    /// The request holds a pending placeholder of its idempotency key (it submitted the
    /// job), which its record replaces; any other live record of the key is a conflict.
    pub replaces_pending: bool,
    /// What the provider answered when Hookline submitted the job, applied first.
    pub submitted: Option<Observation>,
    /// The webhooks kept for the job ([`JobStore::observe_job`] with nothing to match)
    /// are applied at its creation, with their events, when they arrived after this time.
    pub unmatched_since: DateTime<Utc>,
    /// The retention of the payloads of the events it emits.
    pub payload_retention: Option<Duration>,
}

/// Which job an observation is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobTarget {
    /// By id (or uid).
    Key(String),
    /// By [`Provider::match_key`], as webhooks find their job. When none has it yet the
    /// observation is kept, and applied when the job is registered.
    Match(String),
}

/// An observation to apply ([`JobStore::observe_job`]).
#[derive(Debug, Clone)]
pub struct JobObservation {
    pub target: JobTarget,
    pub observation: Observation,
    /// The poller that holds the job's lease and made this observation: the lease ends,
    /// the job's poll count grows and its failures are forgotten.
    pub poller: Option<String>,
    /// The retention of the payloads of the events it emits.
    pub payload_retention: Option<Duration>,
}

/// What [`JobStore::observe_job`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// Applied to this job (which may have ended before: then only its timeline grew).
    Applied(Box<Job>),
    /// No job matched: kept for the job until it is registered.
    Kept,
}

/// A job whose poll fell due, leased to the poller that claimed it.
#[derive(Debug, Clone, PartialEq)]
pub struct DuePoll {
    pub job: Job,
    /// Polls made so far.
    pub polls: u32,
    /// Failed polls since the last one that answered.
    pub failures: u32,
}

/// Filters of job lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub app_id: Option<AppId>,
    pub provider: Option<Provider>,
    pub status: Option<JobStatus>,
    pub group: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

/// Long-running AI jobs: their state, their due polls (one per job, leased like
/// deliveries, so nodes share them and a restart loses none), and the webhooks that
/// arrived before their job.
///
/// Each observation is applied with [`Job::observe`] in the transaction that writes the
/// job, with the messages of the events it emits (skipped if a message with the same
/// `eventId` exists) and, when the job's end completes its group, the group's
/// `job_group.completed` message: exactly one outcome per job and one per group.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Stores a new job, then applies the webhooks kept for it. A uid or a provider job
    /// (its [`Provider::match_key`]) already taken is a conflict.
    async fn create_job(&self, new: NewJob) -> Result<Job>;
    async fn get_job(&self, key: &str) -> Result<Job>;
    async fn list_jobs(&self, filter: &JobFilter, query: &ListQuery) -> Result<Page<Job>>;
    async fn observe_job(&self, observation: JobObservation) -> Result<Observed>;
    /// Leases up to `limit` jobs of `providers` whose poll is due at `now` to `owner`
    /// until `now + lease`, oldest due first. A job whose lease ran out is due again.
    async fn claim_polls(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
        providers: &[Provider],
    ) -> Result<Vec<DuePoll>>;
    /// Moves a job's poll to `due` (the caller keeps it within the deadline, as
    /// [`Job::poll_due`] does) after a poll that learnt nothing, ending `owner`'s lease;
    /// `failed` counts a failure, else they are forgotten. A poll asked for meanwhile (an
    /// observation's [`NextPoll::At`](crate::job::NextPoll::At) while the lease was held)
    /// keeps its earlier time.
    async fn delay_poll(
        &self,
        job: &JobId,
        owner: &str,
        due: DateTime<Utc>,
        failed: bool,
    ) -> Result<()>;
    /// Ends every poll lease held by `owner`, a node that is starting and so polls
    /// nothing yet: what it had claimed before it died falls due at once. Returns how many.
    async fn release_polls(&self, owner: &str) -> Result<u64>;
    /// Deletes the kept webhooks that arrived before `before`; returns how many.
    async fn purge_unmatched(&self, before: DateTime<Utc>) -> Result<u64>;
    /// How many jobs have not ended (for `/metrics`).
    async fn open_jobs(&self) -> Result<u64>;
}

/// Every role at once: what a backend is, and what the HTTP API holds. A backend that
/// implements the seven roles says so with an empty `impl Store for … {}`.
pub trait Store:
    ResourceStore
    + MessageStore
    + DeliveryQueue
    + IngestStore
    + TokenStore
    + IdempotencyStore
    + JobStore
    + std::fmt::Debug
    + 'static
{
    /// The use of the backend's connection pool, where it has one (for `/metrics`).
    fn pool_status(&self) -> Option<crate::metrics::PoolStatus> {
        None
    }
}

/// What a batch of outcomes does to one endpoint's state, folded in the batch's order.
///
/// Both backends record a batch of outcomes through this fold, so an endpoint's failing
/// state follows one rule whatever the database: an exhaustion marks it failing since
/// then (unless it already was), a success clears it, and the last word in the batch wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointChange<'a> {
    pub endpoint: &'a EndpointId,
    /// Disabled by the batch, at this time.
    pub disabled_at: Option<DateTime<Utc>>,
    /// A success came after the batch's last exhaustion (or there was none): the endpoint
    /// is well, unless `failing_from` says it failed again since.
    pub cleared: bool,
    /// The first exhaustion after the last success: failing since then (if not already,
    /// when nothing cleared it in this batch).
    pub failing_from: Option<DateTime<Utc>>,
}

impl<'a> EndpointChange<'a> {
    /// One change per endpoint touched by `outcomes` (in their order), sorted by endpoint
    /// id, leaving out endpoints the batch does not change.
    pub fn fold(outcomes: &'a [AttemptOutcome]) -> Vec<EndpointChange<'a>> {
        let mut by_endpoint: Vec<&'a AttemptOutcome> = outcomes.iter().collect();
        // Stable: each endpoint's outcomes stay in the batch's order.
        by_endpoint.sort_by_key(|outcome| &outcome.attempt.endpoint_id);
        let mut changes: Vec<EndpointChange<'a>> = Vec::new();
        for outcome in by_endpoint {
            let endpoint = &outcome.attempt.endpoint_id;
            if changes.last().is_none_or(|last| last.endpoint != endpoint) {
                changes.push(EndpointChange {
                    endpoint,
                    disabled_at: None,
                    cleared: false,
                    failing_from: None,
                });
            }
            let change = changes.last_mut().expect("pushed above");
            let at = outcome.attempt.created_at;
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
        changes.retain(|change| change.changes_anything());
        changes
    }

    /// Whether applying this change can write anything.
    pub fn changes_anything(&self) -> bool {
        self.disabled_at.is_some() || self.cleared || self.failing_from.is_some()
    }

    /// The endpoint's `failing_since` after this change, given what it was before.
    pub fn failing_since(&self, before: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        if self.cleared {
            self.failing_from
        } else {
            before.or(self.failing_from)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::AttemptId;
    use crate::model::{ErrorKind, MessageStatus, TriggerType};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn outcome(endpoint: &EndpointId, secs: i64, failing: Option<bool>) -> AttemptOutcome {
        AttemptOutcome {
            attempt: Attempt {
                id: AttemptId::new_at(at(secs)),
                app_id: AppId::new_at(at(0)),
                msg_id: MessageId::new_at(at(0)),
                endpoint_id: endpoint.clone(),
                url: "https://a.example".into(),
                status: MessageStatus::Success,
                response_status_code: 200,
                response: None,
                response_headers: Vec::new(),
                request_headers: Vec::new(),
                response_duration_ms: 1,
                trigger_type: TriggerType::Scheduled,
                error_kind: None::<ErrorKind>,
                created_at: at(secs),
            },
            status: MessageStatus::Success,
            next_attempt: None,
            attempts: 1,
            disable_endpoint: false,
            endpoint_failing: failing,
            messages: Vec::new(),
        }
    }

    #[test]
    fn the_fold_keeps_each_endpoints_last_word() {
        let (a, b, c) = (EndpointId::new(), EndpointId::new(), EndpointId::new());
        let mut disabling = outcome(&c, 7, None);
        disabling.disable_endpoint = true;
        let batch = [
            outcome(&a, 1, Some(true)),
            outcome(&b, 2, Some(true)),
            outcome(&a, 3, Some(false)),
            outcome(&b, 4, Some(false)),
            outcome(&b, 5, Some(true)),
            outcome(&b, 6, Some(true)),
            disabling,
            outcome(&EndpointId::new(), 8, None),
        ];
        let mut changes = EndpointChange::fold(&batch);
        changes.sort_by_key(|change| change.endpoint.to_string());
        let find = |id: &EndpointId| changes.iter().find(|c| c.endpoint == id).unwrap();
        assert_eq!(
            changes.len(),
            3,
            "the endpoint with nothing to change is left out"
        );

        let a = find(&a);
        assert!(a.cleared);
        assert_eq!(a.failing_from, None);
        assert_eq!(a.failing_since(Some(at(0))), None, "a success clears it");

        let b = find(&b);
        assert!(b.cleared);
        assert_eq!(
            b.failing_from,
            Some(at(5)),
            "failing since the first exhaustion after the last success"
        );
        assert_eq!(b.failing_since(Some(at(0))), Some(at(5)));

        let c = find(&c);
        assert_eq!(c.disabled_at, Some(at(7)));
        assert_eq!(c.failing_since(Some(at(0))), Some(at(0)), "unchanged");
    }

    #[test]
    fn an_exhaustion_does_not_move_an_earlier_failing_time() {
        let endpoint = EndpointId::new();
        let batch = [outcome(&endpoint, 9, Some(true))];
        let changes = EndpointChange::fold(&batch);
        assert_eq!(changes[0].failing_since(Some(at(2))), Some(at(2)));
        assert_eq!(changes[0].failing_since(None), Some(at(9)));
    }
}
