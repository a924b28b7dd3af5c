//! Long-running AI jobs (the tracker's domain): providers and their status words, the
//! normalized statuses, observations, and the one rule that turns an observation into a
//! job's new state and the events it emits.
//!
//! A job learns of its progress from three places: the provider's webhooks, Hookline's own
//! polls of the provider's status API, and the API (`custom` jobs reported by the user's
//! workers, cancels). Each of them becomes an [`Observation`]; [`Job::observe`] applies it.
//! The first terminal observation wins: every later one goes on the timeline and changes
//! nothing, so the job's app gets exactly one outcome event. Stores call
//! [`Job::observe`] inside the transaction that writes the job, with the events it
//! returns, so two nodes observing one job at once cannot both end it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::id::{AppId, JobId, MessageId};
use crate::model::{IdempotencyRecord, Message};
use crate::store::{NewJob, NewMessage};

/// Kinds of job, each a status API Hookline knows how to read (`custom`: none, the user's
/// workers report it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    OpenaiResponse,
    OpenaiBatch,
    OpenaiFineTuning,
    OpenaiEvalRun,
    ReplicatePrediction,
    ReplicateTraining,
    AnthropicMessageBatch,
    GeminiBatch,
    Custom,
}

/// The companies behind the providers: each has one base URL and one credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Openai,
    Replicate,
    Anthropic,
    Gemini,
}

impl Family {
    pub const ALL: [Family; 4] = [
        Family::Openai,
        Family::Replicate,
        Family::Anthropic,
        Family::Gemini,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Openai => "openai",
            Family::Replicate => "replicate",
            Family::Anthropic => "anthropic",
            Family::Gemini => "gemini",
        }
    }
}

impl Provider {
    pub const ALL: [Provider; 9] = [
        Provider::OpenaiResponse,
        Provider::OpenaiBatch,
        Provider::OpenaiFineTuning,
        Provider::OpenaiEvalRun,
        Provider::ReplicatePrediction,
        Provider::ReplicateTraining,
        Provider::AnthropicMessageBatch,
        Provider::GeminiBatch,
        Provider::Custom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenaiResponse => "openai_response",
            Provider::OpenaiBatch => "openai_batch",
            Provider::OpenaiFineTuning => "openai_fine_tuning",
            Provider::OpenaiEvalRun => "openai_eval_run",
            Provider::ReplicatePrediction => "replicate_prediction",
            Provider::ReplicateTraining => "replicate_training",
            Provider::AnthropicMessageBatch => "anthropic_message_batch",
            Provider::GeminiBatch => "gemini_batch",
            Provider::Custom => "custom",
        }
    }

    pub fn parse(text: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// The company, `None` for `custom`.
    pub fn family(self) -> Option<Family> {
        Some(match self {
            Provider::OpenaiResponse
            | Provider::OpenaiBatch
            | Provider::OpenaiFineTuning
            | Provider::OpenaiEvalRun => Family::Openai,
            Provider::ReplicatePrediction | Provider::ReplicateTraining => Family::Replicate,
            Provider::AnthropicMessageBatch => Family::Anthropic,
            Provider::GeminiBatch => Family::Gemini,
            Provider::Custom => return None,
        })
    }

    /// Whether the provider announces the job's end by webhook (so polling starts late).
    pub fn sends_webhooks(self) -> bool {
        !matches!(self, Provider::AnthropicMessageBatch | Provider::Custom)
    }

    /// The polling plan when the job names none.
    pub fn default_poll(self) -> PollPlan {
        let after = if self.sends_webhooks() { 60 } else { 0 };
        PollPlan {
            after: Duration::from_secs(after),
            interval: Duration::from_secs(15),
            max_interval: Duration::from_secs(600),
        }
    }

    /// The status call's path below the family's base URL. An eval run's id is
    /// `{eval_id}/{run_id}`, as its path needs both.
    pub fn status_path(self, provider_job_id: &str) -> Option<String> {
        let id = provider_job_id;
        Some(match self {
            Provider::OpenaiResponse => format!("/responses/{id}"),
            Provider::OpenaiBatch => format!("/batches/{id}"),
            Provider::OpenaiFineTuning => format!("/fine_tuning/jobs/{id}"),
            Provider::OpenaiEvalRun => {
                let (eval, run) = id.split_once('/')?;
                format!("/evals/{eval}/runs/{run}")
            }
            Provider::ReplicatePrediction => format!("/predictions/{id}"),
            Provider::ReplicateTraining => format!("/trainings/{id}"),
            Provider::AnthropicMessageBatch => format!("/v1/messages/batches/{id}"),
            Provider::GeminiBatch => format!("/batches/{id}"),
            Provider::Custom => return None,
        })
    }

    /// The cancel call's path below the family's base URL, where the provider has one.
    pub fn cancel_path(self, provider_job_id: &str) -> Option<String> {
        let status = self.status_path(provider_job_id)?;
        match self {
            Provider::GeminiBatch => Some(format!("{status}:cancel")),
            Provider::OpenaiEvalRun => None,
            _ => Some(format!("{status}/cancel")),
        }
    }

    /// The create call's path, for jobs Hookline submits itself.
    pub fn submit_path(self) -> Option<&'static str> {
        Some(match self {
            Provider::OpenaiResponse => "/responses",
            Provider::OpenaiBatch => "/batches",
            Provider::OpenaiFineTuning => "/fine_tuning/jobs",
            Provider::ReplicatePrediction => "/predictions",
            Provider::ReplicateTraining => "/trainings",
            Provider::AnthropicMessageBatch => "/v1/messages/batches",
            Provider::OpenaiEvalRun | Provider::GeminiBatch | Provider::Custom => return None,
        })
    }

    /// The id as Hookline keeps it: a Gemini batch's resource name (`batches/x`, as the SDK
    /// names it) is its id `x`, as the status path and the webhooks have it.
    pub fn job_id(self, id: &str) -> &str {
        match self {
            Provider::GeminiBatch => id.strip_prefix("batches/").unwrap_or(id),
            _ => id,
        }
    }

    /// Whether `id` has the shape of this provider's ids: no path tricks, and an eval
    /// run's `{eval_id}/{run_id}`.
    pub fn valid_job_id(self, id: &str) -> bool {
        let part = |part: &str| {
            !part.is_empty()
                && part.len() <= 200
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
                && part != "."
                && part != ".."
        };
        match self {
            Provider::OpenaiEvalRun => id.split_once('/').is_some_and(|(a, b)| part(a) && part(b)),
            _ => part(id),
        }
    }

    /// The key webhooks find the job by: the family and the provider's id, since a
    /// webhook names the company's object, not always its kind (a Replicate webhook is a
    /// prediction or a training).
    pub fn match_key(self, provider_job_id: &str) -> Option<String> {
        // An eval run's webhook names the run alone (`data.id`), not `{eval_id}/{run_id}`.
        let id = match self {
            Provider::OpenaiEvalRun => provider_job_id
                .split_once('/')
                .map_or(provider_job_id, |(_, run)| run),
            _ => provider_job_id,
        };
        Some(format!("{}:{id}", self.family()?.as_str()))
    }

    /// Reads a status object as the provider's API returns it (and Replicate's webhooks
    /// push it).
    pub fn read(self, object: &Value) -> Reading {
        let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str);
        let present = |pointer: &str| object.pointer(pointer).filter(|v| !v.is_null()).cloned();
        let (word, progress, error) = match self {
            Provider::OpenaiResponse => (
                text("/status"),
                None,
                present("/error").or_else(|| present("/incomplete_details")),
            ),
            Provider::OpenaiBatch => (
                text("/status"),
                present("/request_counts"),
                present("/errors"),
            ),
            Provider::OpenaiFineTuning => (text("/status"), None, present("/error")),
            Provider::OpenaiEvalRun => (
                text("/status"),
                present("/result_counts"),
                present("/error"),
            ),
            Provider::ReplicatePrediction | Provider::ReplicateTraining => {
                (text("/status"), present("/logs"), present("/error"))
            }
            Provider::AnthropicMessageBatch => {
                (text("/processing_status"), present("/request_counts"), None)
            }
            Provider::GeminiBatch => (
                text("/metadata/state").or_else(|| text("/state")),
                present("/metadata/batchStats").or_else(|| present("/batchStats")),
                present("/error"),
            ),
            Provider::Custom => (text("/status"), present("/progress"), present("/error")),
        };
        let status = word.and_then(|word| self.status_of(word, object));
        Reading {
            provider_status: word.map(str::to_owned),
            status,
            progress,
            error,
        }
    }

    /// The normalized status of one of the provider's status words; `None` for a word
    /// Hookline does not know (it goes on the timeline and changes nothing).
    pub fn status_of(self, word: &str, object: &Value) -> Option<JobStatus> {
        use JobStatus::*;
        Some(match (self, word) {
            (Provider::OpenaiResponse, "queued") => Queued,
            (Provider::OpenaiResponse, "in_progress") => Running,
            (Provider::OpenaiResponse, "completed") => Succeeded,
            (Provider::OpenaiResponse, "failed" | "incomplete") => Failed,
            (Provider::OpenaiResponse, "cancelled") => Cancelled,

            (Provider::OpenaiBatch, "validating") => Queued,
            (Provider::OpenaiBatch, "in_progress" | "finalizing" | "cancelling") => Running,
            (Provider::OpenaiBatch, "completed") => Succeeded,
            (Provider::OpenaiBatch, "failed") => Failed,
            (Provider::OpenaiBatch, "expired") => Expired,
            (Provider::OpenaiBatch, "cancelled") => Cancelled,

            (Provider::OpenaiFineTuning, "validating_files" | "queued") => Queued,
            (Provider::OpenaiFineTuning, "running") => Running,
            (Provider::OpenaiFineTuning, "succeeded") => Succeeded,
            (Provider::OpenaiFineTuning, "failed") => Failed,
            (Provider::OpenaiFineTuning, "cancelled") => Cancelled,

            (Provider::OpenaiEvalRun, "queued") => Queued,
            (Provider::OpenaiEvalRun, "in_progress") => Running,
            (Provider::OpenaiEvalRun, "completed") => Succeeded,
            (Provider::OpenaiEvalRun, "failed") => Failed,
            (Provider::OpenaiEvalRun, "canceled") => Cancelled,

            (Provider::ReplicatePrediction | Provider::ReplicateTraining, word) => match word {
                "starting" => Queued,
                "processing" => Running,
                "succeeded" => Succeeded,
                "failed" => Failed,
                "canceled" => Cancelled,
                // The prediction's own deadline (`Cancel-After`) passed before it started.
                "aborted" => Expired,
                _ => return None,
            },

            (Provider::AnthropicMessageBatch, "in_progress" | "canceling") => Running,
            (Provider::AnthropicMessageBatch, "ended") => anthropic_outcome(object),

            (Provider::GeminiBatch, word) => {
                let state = word
                    .strip_prefix("BATCH_STATE_")
                    .or_else(|| word.strip_prefix("JOB_STATE_"))?;
                match state {
                    "PENDING" | "QUEUED" | "UNSPECIFIED" => Queued,
                    "RUNNING" | "CANCELLING" | "UPDATING" | "PAUSED" => Running,
                    "SUCCEEDED" | "PARTIALLY_SUCCEEDED" => Succeeded,
                    "FAILED" => Failed,
                    "CANCELLED" => Cancelled,
                    "EXPIRED" => Expired,
                    _ => return None,
                }
            }

            (Provider::Custom, word) => JobStatus::parse(word)?,
            _ => return None,
        })
    }
}

/// An ended Anthropic batch's outcome, from its request counts: cancelled if a cancel
/// was asked for, expired if every request expired, failed if none succeeded.
fn anthropic_outcome(batch: &Value) -> JobStatus {
    let count = |name: &str| {
        batch
            .pointer(&format!("/request_counts/{name}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let cancel_asked = batch
        .get("cancel_initiated_at")
        .is_some_and(|at| !at.is_null());
    let (succeeded, errored, expired) = (count("succeeded"), count("errored"), count("expired"));
    if cancel_asked {
        JobStatus::Cancelled
    } else if succeeded == 0 && errored == 0 && expired > 0 {
        JobStatus::Expired
    } else if succeeded == 0 && errored > 0 {
        JobStatus::Failed
    } else {
        JobStatus::Succeeded
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a status object says.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub provider_status: Option<String>,
    pub status: Option<JobStatus>,
    pub progress: Option<Value>,
    pub error: Option<Value>,
}

/// A job's normalized status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Expired,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The stored form.
    pub fn code(self) -> i16 {
        self as i16
    }

    pub fn from_code(code: i16) -> Option<JobStatus> {
        JobStatus::ALL.get(usize::try_from(code).ok()?).copied()
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When Hookline polls a job: the first poll `after` the job's creation (when no terminal
/// webhook came first), then at `interval`, doubling up to `max_interval`, with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PollPlan {
    /// Seconds.
    #[serde(with = "seconds")]
    #[schema(value_type = u64)]
    pub after: Duration,
    /// Seconds.
    #[serde(with = "seconds")]
    #[schema(value_type = u64)]
    pub interval: Duration,
    /// Seconds.
    #[serde(with = "seconds")]
    #[schema(value_type = u64)]
    pub max_interval: Duration,
}

impl PollPlan {
    /// The wait before the poll after `polls` polls (or failures): `interval` doubled
    /// `polls` times, at most `max_interval`, scaled by `jitter` (0.8 ..= 1.2 is usual).
    pub fn backoff(&self, polls: u32, jitter: f64) -> Duration {
        let doubled = self
            .interval
            .saturating_mul(1u32 << polls.min(20))
            .min(self.max_interval);
        doubled.mul_f64(jitter.clamp(0.5, 1.5))
    }
}

mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(value.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// Where an observation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ObservedBy {
    Webhook,
    Poll,
    Api,
}

/// One line of a job's timeline: every observation, including those that changed nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    pub source: ObservedBy,
    pub provider_status: Option<String>,
    /// The job's status after the observation.
    pub status: JobStatus,
}

/// A job, as the API answers it and as its events carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: JobId,
    pub uid: Option<String>,
    pub provider: Provider,
    pub provider_job_id: Option<String>,
    pub app_id: AppId,
    pub group: Option<String>,
    pub metadata: BTreeMap<String, Value>,
    pub status: JobStatus,
    pub provider_status: Option<String>,
    pub progress: Option<Value>,
    pub result: Option<Value>,
    pub error: Option<Value>,
    /// How Hookline polls the job; `None` when it only listens for webhooks.
    pub poll: Option<PollPlan>,
    pub deadline: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub timeline: Vec<TimelineEntry>,
}

/// What should happen to a job's next poll after an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NextPoll {
    /// Leave it as it is.
    Keep,
    /// Poll at this time (or at the deadline if that comes first).
    At(DateTime<Utc>),
}

/// Something learnt of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    pub at: DateTime<Utc>,
    pub source: ObservedBy,
    pub provider_status: Option<String>,
    /// The status it says the job is in; `None` when it says nothing of it (a thin
    /// webhook that a status call must complete, or a word Hookline does not know).
    pub status: Option<JobStatus>,
    pub progress: Option<Value>,
    /// The provider's status object, as fetched or pushed.
    pub result: Option<Value>,
    pub error: Option<Value>,
    pub next_poll: NextPoll,
}

/// A job event's type, as its message's `eventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEvent {
    Created,
    Running,
    Progress,
    Ended(JobStatus),
}

impl JobEvent {
    pub fn event_type(self) -> &'static str {
        match self {
            JobEvent::Created => "job.created",
            JobEvent::Running => "job.running",
            JobEvent::Progress => "job.progress",
            JobEvent::Ended(JobStatus::Succeeded) => "job.succeeded",
            JobEvent::Ended(JobStatus::Failed) => "job.failed",
            JobEvent::Ended(JobStatus::Cancelled) => "job.cancelled",
            JobEvent::Ended(JobStatus::Expired) => "job.expired",
            JobEvent::Ended(JobStatus::Queued | JobStatus::Running) => {
                unreachable!("only a terminal status ends a job")
            }
        }
    }
}

/// The event type a group's end emits.
pub const GROUP_COMPLETED: &str = "job_group.completed";

/// The event types jobs emit, for the event type catalogue.
pub const EVENT_TYPES: [&str; 8] = [
    "job.created",
    "job.running",
    "job.progress",
    "job.succeeded",
    "job.failed",
    "job.cancelled",
    "job.expired",
    GROUP_COMPLETED,
];

impl Job {
    /// A job registered at `now`, queued, with its provider's polling plan and no
    /// uid, group or metadata (set them after).
    pub fn new(
        provider: Provider,
        provider_job_id: Option<String>,
        app_id: AppId,
        now: DateTime<Utc>,
        deadline: DateTime<Utc>,
    ) -> Job {
        Job {
            id: JobId::new_at(now),
            uid: None,
            provider,
            provider_job_id,
            app_id,
            group: None,
            metadata: BTreeMap::new(),
            status: JobStatus::Queued,
            provider_status: None,
            progress: None,
            result: None,
            error: None,
            poll: provider.family().map(|_| provider.default_poll()),
            deadline,
            created_at: now,
            updated_at: now,
            timeline: Vec::new(),
        }
    }

    /// What storing this new job takes: its first poll (`poll.after` from its creation,
    /// or the deadline for a job that is not polled, so that it expires), its
    /// `job.created` message, the provider's answer to its submission (`submitted`), and
    /// the webhooks kept for it since `unmatched_since`.
    pub fn registration(
        self,
        idempotency: Option<IdempotencyRecord>,
        submitted: Option<Observation>,
        unmatched_since: DateTime<Utc>,
        payload_retention: Option<Duration>,
    ) -> NewJob {
        let poll_due = match &self.poll {
            Some(plan) => chrono::Duration::from_std(plan.after)
                .ok()
                .and_then(|after| self.created_at.checked_add_signed(after))
                .unwrap_or(self.deadline),
            None => self.deadline,
        };
        let created_message =
            self.event_message(JobEvent::Created, self.created_at, payload_retention);
        NewJob {
            job: self,
            poll_due,
            created_message,
            idempotency,
            replaces_pending: false,
            submitted,
            unmatched_since,
            payload_retention,
        }
    }

    /// Applies `observation`: it goes on the timeline; unless the job has ended, the
    /// status, provider status, progress, result and error it carries replace the job's.
    /// Returns the events to emit: `job.running` when the job starts running,
    /// `job.progress` when its progress changes while it runs, and the outcome event
    /// when it ends. Nothing once the job has ended: the first terminal observation wins.
    pub fn observe(&mut self, observation: &Observation) -> Vec<JobEvent> {
        let ended = self.status.is_terminal();
        let mut events = Vec::new();
        if !ended {
            let before = self.status;
            if observation.provider_status.is_some() {
                self.provider_status
                    .clone_from(&observation.provider_status);
            }
            // A late retry of an earlier state (Replicate's `starting` after `processing`)
            // does not take the job back.
            let backwards =
                observation.status == Some(JobStatus::Queued) && self.status == JobStatus::Running;
            if let Some(status) = observation.status.filter(|_| !backwards) {
                let progressed = observation.progress.is_some()
                    && observation.progress != self.progress
                    && status == JobStatus::Running;
                if let Some(progress) = &observation.progress {
                    self.progress = Some(progress.clone());
                }
                if observation.result.is_some() {
                    self.result.clone_from(&observation.result);
                }
                if observation.error.is_some() {
                    self.error.clone_from(&observation.error);
                }
                self.status = status;
                if status.is_terminal() {
                    events.push(JobEvent::Ended(status));
                } else if status == JobStatus::Running && before != JobStatus::Running {
                    events.push(JobEvent::Running);
                } else if progressed && before == JobStatus::Running {
                    events.push(JobEvent::Progress);
                }
            }
            self.updated_at = self.updated_at.max(observation.at);
        }
        self.timeline.push(TimelineEntry {
            at: observation.at,
            source: observation.source,
            provider_status: observation.provider_status.clone(),
            status: self.status,
        });
        events
    }

    /// The `eventId` of an event: made from the job id and the event type, so that no
    /// event is ever emitted twice (a progress event also names its timeline position).
    pub fn event_id(&self, event: JobEvent) -> String {
        match event {
            JobEvent::Progress => {
                format!("{}.{}.{}", self.id, event.event_type(), self.timeline.len())
            }
            _ => format!("{}.{}", self.id, event.event_type()),
        }
    }

    /// The message of an event to the job's app: `{type, timestamp, data: <the job>}`.
    pub fn event_message(
        &self,
        event: JobEvent,
        at: DateTime<Utc>,
        payload_retention: Option<Duration>,
    ) -> NewMessage {
        let event_type = event.event_type();
        let payload = json!({
            "type": event_type,
            "timestamp": at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "data": self,
        });
        new_event(
            &self.app_id,
            self.event_id(event),
            event_type,
            payload,
            at,
            payload_retention,
        )
    }

    /// The outcome a thin webhook announced (its status and event type) that no status
    /// call has confirmed yet: the job's outcome if the status calls that should complete
    /// the webhook fail, or answer that the job has not ended, or the deadline comes first.
    pub fn announced(&self) -> Option<(JobStatus, &str)> {
        if self.status.is_terminal() {
            return None;
        }
        self.timeline
            .iter()
            .rev()
            .filter(|entry| entry.source == ObservedBy::Webhook)
            .find_map(|entry| {
                let event = entry.provider_status.as_deref()?;
                thin_status(self.provider, event).map(|status| (status, event))
            })
    }

    /// When the job's next poll falls due after `next`: never after its deadline, and not
    /// at all once it has ended.
    pub fn poll_due(&self, next: DateTime<Utc>) -> Option<DateTime<Utc>> {
        (!self.status.is_terminal()).then(|| next.min(self.deadline))
    }
}

/// How many of a group's jobs ended in each status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCounts(pub BTreeMap<String, u64>);

/// The `job_group.completed` message of `group` of `app`, whose jobs all ended.
pub fn group_completed(
    app: &AppId,
    group: &str,
    counts: &GroupCounts,
    at: DateTime<Utc>,
    payload_retention: Option<Duration>,
) -> NewMessage {
    let total: u64 = counts.0.values().sum();
    let payload = json!({
        "type": GROUP_COMPLETED,
        "timestamp": at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": {"appId": app, "group": group, "total": total, "counts": counts.0},
    });
    new_event(
        app,
        format!("{GROUP_COMPLETED}.{group}"),
        GROUP_COMPLETED,
        payload,
        at,
        payload_retention,
    )
}

fn new_event(
    app: &AppId,
    event_id: String,
    event_type: &str,
    payload: Value,
    at: DateTime<Utc>,
    payload_retention: Option<Duration>,
) -> NewMessage {
    NewMessage {
        message: Message {
            id: MessageId::new_at(at),
            app_id: app.clone(),
            event_id: Some(event_id),
            event_type: event_type.to_owned(),
            payload: Some(payload.to_string()),
            channels: None,
            headers: BTreeMap::new(),
            created_at: at,
        },
        only_endpoint: None,
        idempotency: None,
        payload_expires_at: payload_retention
            .and_then(|retention| chrono::Duration::from_std(retention).ok())
            .map(|retention| at + retention),
        lease: None,
    }
}

/// What a webhook says of a job: which job (by [`Provider::match_key`]) and what.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookReport {
    pub match_key: String,
    pub observation: Observation,
}

/// Reads a webhook the receiving side accepted, by its source type's name: OpenAI's
/// thin events (`{type, data: {id}}`), Replicate's full prediction or training objects,
/// and Gemini's events (Standard Webhooks, or the unwrapped data of a Pub/Sub push).
/// `fetch` says whether a status call can complete a thin event: then the observation
/// says nothing of the status and asks for a poll at once, so the outcome always carries
/// the provider's final object; without one, the event's own word decides.
pub fn read_webhook(
    source_type: &str,
    body: &[u8],
    at: DateTime<Utc>,
    fetch: impl Fn(Family) -> bool,
) -> Option<WebhookReport> {
    if !matches!(
        source_type,
        "open-ai" | "replicate" | "standard-webhooks" | "google-pubsub"
    ) {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    match source_type {
        "open-ai" | "standard-webhooks" | "google-pubsub" => {
            let event = value.get("type")?.as_str()?;
            let candidates: &[Provider] = match source_type {
                "open-ai" => &[
                    Provider::OpenaiResponse,
                    Provider::OpenaiBatch,
                    Provider::OpenaiFineTuning,
                    Provider::OpenaiEvalRun,
                ],
                _ => &[Provider::GeminiBatch],
            };
            let (provider, word) = candidates
                .iter()
                .find_map(|&provider| Some((provider, thin_status(provider, event)?)))?;
            let id = value.pointer("/data/id")?.as_str()?;
            let id = match provider {
                Provider::GeminiBatch => id.strip_prefix("batches/").unwrap_or(id),
                _ => id,
            };
            thin_report(provider, id, event, word, value.clone(), at, &fetch)
        }
        "replicate" => {
            let id = value.get("id")?.as_str()?;
            let provider = Provider::ReplicatePrediction;
            let reading = provider.read(&value);
            Some(WebhookReport {
                match_key: provider.match_key(id)?,
                observation: Observation {
                    at,
                    source: ObservedBy::Webhook,
                    provider_status: reading.provider_status,
                    status: reading.status,
                    progress: reading.progress,
                    result: Some(value),
                    error: reading.error,
                    next_poll: NextPoll::Keep,
                },
            })
        }
        _ => None,
    }
}

/// The status a thin webhook's event type announces for a job of `provider` (OpenAI's
/// events; Gemini's, whose `batch.*` names differ from OpenAI's in their success word).
fn thin_status(provider: Provider, event: &str) -> Option<JobStatus> {
    use JobStatus::*;
    use Provider::*;
    Some(match (provider, event) {
        (OpenaiResponse, "response.completed") => Succeeded,
        (OpenaiResponse, "response.failed" | "response.incomplete") => Failed,
        (OpenaiResponse, "response.cancelled") => Cancelled,
        (OpenaiBatch, "batch.completed") => Succeeded,
        (OpenaiBatch | GeminiBatch, "batch.failed") => Failed,
        (OpenaiBatch | GeminiBatch, "batch.expired") => Expired,
        (OpenaiBatch | GeminiBatch, "batch.cancelled") => Cancelled,
        (GeminiBatch, "batch.succeeded") => Succeeded,
        (OpenaiFineTuning, "fine_tuning.job.succeeded") => Succeeded,
        (OpenaiFineTuning, "fine_tuning.job.failed") => Failed,
        (OpenaiFineTuning, "fine_tuning.job.cancelled") => Cancelled,
        (OpenaiEvalRun, "eval.run.succeeded") => Succeeded,
        (OpenaiEvalRun, "eval.run.failed") => Failed,
        (OpenaiEvalRun, "eval.run.canceled") => Cancelled,
        _ => return None,
    })
}

fn thin_report(
    provider: Provider,
    id: &str,
    event: &str,
    status: JobStatus,
    envelope: Value,
    at: DateTime<Utc>,
    fetch: &impl Fn(Family) -> bool,
) -> Option<WebhookReport> {
    let family = provider.family()?;
    let complete = fetch(family);
    Some(WebhookReport {
        match_key: provider.match_key(id)?,
        observation: Observation {
            at,
            source: ObservedBy::Webhook,
            provider_status: Some(event.to_owned()),
            status: (!complete).then_some(status),
            progress: None,
            result: (!complete).then_some(envelope),
            error: None,
            next_poll: if complete {
                NextPoll::At(at)
            } else {
                NextPoll::Keep
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn job(provider: Provider) -> Job {
        Job {
            id: JobId::new_at(at(0)),
            uid: None,
            provider,
            provider_job_id: Some("resp_1".into()),
            app_id: AppId::new_at(at(0)),
            group: None,
            metadata: BTreeMap::new(),
            status: JobStatus::Queued,
            provider_status: None,
            progress: None,
            result: None,
            error: None,
            poll: Some(provider.default_poll()),
            deadline: at(86_400),
            created_at: at(0),
            updated_at: at(0),
            timeline: Vec::new(),
        }
    }

    fn seen(secs: i64, status: Option<JobStatus>, progress: Option<Value>) -> Observation {
        Observation {
            at: at(secs),
            source: ObservedBy::Poll,
            provider_status: status.map(|s| s.as_str().to_owned()),
            status,
            progress,
            result: Some(json!({"n": secs})),
            error: None,
            next_poll: NextPoll::Keep,
        }
    }

    #[test]
    fn the_first_terminal_observation_wins_and_later_ones_only_go_on_the_timeline() {
        let mut job = job(Provider::Custom);
        assert_eq!(job.observe(&seen(1, Some(JobStatus::Queued), None)), vec![]);
        assert_eq!(
            job.observe(&seen(2, Some(JobStatus::Running), None)),
            vec![JobEvent::Running]
        );
        assert_eq!(
            job.observe(&seen(3, Some(JobStatus::Running), Some(json!({"done": 1})))),
            vec![JobEvent::Progress]
        );
        assert_eq!(
            job.observe(&seen(4, Some(JobStatus::Running), Some(json!({"done": 1})))),
            vec![],
            "unchanged progress is no event"
        );
        assert_eq!(
            job.observe(&seen(5, Some(JobStatus::Failed), None)),
            vec![JobEvent::Ended(JobStatus::Failed)]
        );
        assert_eq!(
            job.observe(&seen(6, Some(JobStatus::Succeeded), None)),
            vec![]
        );
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(
            job.result,
            Some(json!({"n": 5})),
            "the late result is not taken"
        );
        assert_eq!(
            job.timeline.len(),
            6,
            "every observation is on the timeline"
        );
        assert_eq!(job.timeline[5].status, JobStatus::Failed);
        assert_eq!(job.updated_at, at(5));
    }

    #[test]
    fn an_observation_without_a_status_changes_nothing_but_the_timeline() {
        let mut job = job(Provider::OpenaiResponse);
        let mut thin = seen(1, None, None);
        thin.provider_status = Some("response.completed".into());
        assert_eq!(job.observe(&thin), vec![]);
        assert_eq!(job.status, JobStatus::Queued);
        assert_eq!(job.result, None);
        assert_eq!(
            job.timeline[0].provider_status.as_deref(),
            Some("response.completed")
        );
    }

    #[test]
    fn every_status_word_of_the_reference_is_mapped() {
        use JobStatus::*;
        let cases: &[(Provider, &[(&str, JobStatus)])] = &[
            (
                Provider::OpenaiResponse,
                &[
                    ("queued", Queued),
                    ("in_progress", Running),
                    ("completed", Succeeded),
                    ("failed", Failed),
                    ("cancelled", Cancelled),
                    ("incomplete", Failed),
                ],
            ),
            (
                Provider::OpenaiBatch,
                &[
                    ("validating", Queued),
                    ("in_progress", Running),
                    ("finalizing", Running),
                    ("cancelling", Running),
                    ("completed", Succeeded),
                    ("failed", Failed),
                    ("expired", Expired),
                    ("cancelled", Cancelled),
                ],
            ),
            (
                Provider::OpenaiFineTuning,
                &[
                    ("validating_files", Queued),
                    ("queued", Queued),
                    ("running", Running),
                    ("succeeded", Succeeded),
                    ("failed", Failed),
                    ("cancelled", Cancelled),
                ],
            ),
            (
                Provider::OpenaiEvalRun,
                &[
                    ("queued", Queued),
                    ("in_progress", Running),
                    ("completed", Succeeded),
                    ("failed", Failed),
                    ("canceled", Cancelled),
                ],
            ),
            (
                Provider::ReplicatePrediction,
                &[
                    ("starting", Queued),
                    ("processing", Running),
                    ("succeeded", Succeeded),
                    ("failed", Failed),
                    ("canceled", Cancelled),
                    ("aborted", Expired),
                ],
            ),
            (
                Provider::AnthropicMessageBatch,
                &[("in_progress", Running), ("canceling", Running)],
            ),
            (
                Provider::GeminiBatch,
                &[
                    ("BATCH_STATE_PENDING", Queued),
                    ("BATCH_STATE_RUNNING", Running),
                    ("BATCH_STATE_SUCCEEDED", Succeeded),
                    ("BATCH_STATE_FAILED", Failed),
                    ("BATCH_STATE_CANCELLED", Cancelled),
                    ("BATCH_STATE_EXPIRED", Expired),
                    ("JOB_STATE_RUNNING", Running),
                    ("JOB_STATE_SUCCEEDED", Succeeded),
                ],
            ),
        ];
        for (provider, words) in cases {
            for (word, status) in *words {
                assert_eq!(
                    provider.status_of(word, &Value::Null),
                    Some(*status),
                    "{provider} {word}"
                );
            }
            assert_eq!(provider.status_of("no_such_word", &Value::Null), None);
        }
    }

    #[test]
    fn an_ended_anthropic_batch_is_judged_by_its_counts() {
        let batch = |counts: Value, cancel: Value| {
            json!({"processing_status": "ended", "request_counts": counts,
                   "cancel_initiated_at": cancel})
        };
        let read = |b: Value| Provider::AnthropicMessageBatch.read(&b).status;
        let counts = |s, e, x| json!({"succeeded": s, "errored": e, "expired": x, "canceled": 0});
        assert_eq!(
            read(batch(counts(3, 1, 0), Value::Null)),
            Some(JobStatus::Succeeded)
        );
        assert_eq!(
            read(batch(counts(0, 2, 0), Value::Null)),
            Some(JobStatus::Failed)
        );
        assert_eq!(
            read(batch(counts(0, 0, 4), Value::Null)),
            Some(JobStatus::Expired)
        );
        assert_eq!(
            read(batch(counts(1, 0, 0), json!("2026-01-01T00:00:00Z"))),
            Some(JobStatus::Cancelled)
        );
    }

    #[test]
    fn readings_take_progress_and_errors_from_the_providers_fields() {
        let batch =
            json!({"status": "in_progress", "request_counts": {"total": 4, "completed": 1}});
        let reading = Provider::OpenaiBatch.read(&batch);
        assert_eq!(reading.status, Some(JobStatus::Running));
        assert_eq!(reading.progress, Some(json!({"total": 4, "completed": 1})));
        let gemini = json!({"metadata": {"state": "BATCH_STATE_FAILED"}, "error": {"code": 3}});
        let reading = Provider::GeminiBatch.read(&gemini);
        assert_eq!(reading.status, Some(JobStatus::Failed));
        assert_eq!(reading.error, Some(json!({"code": 3})));
        let prediction = json!({"id": "p1", "status": "processing", "logs": "step 1"});
        assert_eq!(
            Provider::ReplicatePrediction.read(&prediction).progress,
            Some(json!("step 1"))
        );
    }

    #[test]
    fn thin_webhooks_ask_for_a_status_call_when_one_can_be_made() {
        let body = br#"{"object":"event","id":"evt_1","type":"response.completed","created_at":1,"data":{"id":"resp_9"}}"#;
        let report = read_webhook("open-ai", body, at(5), |_| true).unwrap();
        assert_eq!(report.match_key, "openai:resp_9");
        assert_eq!(report.observation.status, None);
        assert_eq!(report.observation.next_poll, NextPoll::At(at(5)));
        let report = read_webhook("open-ai", body, at(5), |_| false).unwrap();
        assert_eq!(report.observation.status, Some(JobStatus::Succeeded));
        assert_eq!(report.observation.next_poll, NextPoll::Keep);
        assert!(
            read_webhook(
                "open-ai",
                br#"{"type":"realtime.call.incoming","data":{"id":"x"}}"#,
                at(5),
                |_| true
            )
            .is_none()
        );

        let gemini = br#"{"type":"batch.succeeded","data":{"id":"batches/b7"}}"#;
        let report = read_webhook("standard-webhooks", gemini, at(5), |_| false).unwrap();
        assert_eq!(report.match_key, "gemini:b7");

        let prediction = br#"{"id":"p1","status":"succeeded","output":["x"]}"#;
        let report = read_webhook("replicate", prediction, at(5), |_| true).unwrap();
        assert_eq!(report.match_key, "replicate:p1");
        assert_eq!(report.observation.status, Some(JobStatus::Succeeded));
        assert_eq!(report.observation.result.unwrap()["output"], json!(["x"]));
    }

    #[test]
    fn a_thin_webhook_announces_an_end_until_the_job_ends() {
        let body = br#"{"type":"response.completed","data":{"id":"resp_1"}}"#;
        let report = read_webhook("open-ai", body, at(5), |_| true).unwrap();
        let mut response = job(Provider::OpenaiResponse);
        assert_eq!(response.announced(), None);
        assert_eq!(response.observe(&report.observation), vec![]);
        assert_eq!(response.status, JobStatus::Queued);
        assert_eq!(
            response.announced(),
            Some((JobStatus::Succeeded, "response.completed"))
        );
        response.observe(&seen(6, Some(JobStatus::Failed), None));
        assert_eq!(response.announced(), None, "the job ended");

        // `batch.failed` is OpenAI's and Gemini's; `batch.completed` only OpenAI's.
        let mut gemini = job(Provider::GeminiBatch);
        let mut event = seen(7, None, None);
        event.source = ObservedBy::Webhook;
        event.provider_status = Some("batch.completed".into());
        gemini.observe(&event);
        assert_eq!(gemini.announced(), None);
        event.provider_status = Some("batch.failed".into());
        gemini.observe(&event);
        assert_eq!(
            gemini.announced(),
            Some((JobStatus::Failed, "batch.failed"))
        );
        let openai = br#"{"type":"batch.failed","data":{"id":"batch_1"}}"#;
        let report = read_webhook("open-ai", openai, at(5), |_| false).unwrap();
        assert_eq!(report.match_key, "openai:batch_1");
        let report = read_webhook("google-pubsub", openai, at(5), |_| false).unwrap();
        assert_eq!(report.match_key, "gemini:batch_1");
    }

    #[test]
    fn eval_run_webhooks_find_their_job_and_late_states_do_not_go_back() {
        let job_key = Provider::OpenaiEvalRun
            .match_key("eval_1/evalrun_2")
            .unwrap();
        let body = br#"{"type":"eval.run.succeeded","data":{"id":"evalrun_2"}}"#;
        let report = read_webhook("open-ai", body, at(1), |_| false).unwrap();
        assert_eq!(report.match_key, job_key);

        let mut job = job(Provider::ReplicatePrediction);
        job.observe(&seen(1, Some(JobStatus::Running), None));
        assert_eq!(job.observe(&seen(2, Some(JobStatus::Queued), None)), vec![]);
        assert_eq!(job.status, JobStatus::Running);
        assert_eq!(job.timeline[1].status, JobStatus::Running);
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let plan = Provider::OpenaiBatch.default_poll();
        assert_eq!(plan.backoff(0, 1.0), Duration::from_secs(15));
        assert_eq!(plan.backoff(2, 1.0), Duration::from_secs(60));
        assert_eq!(plan.backoff(40, 1.0), Duration::from_secs(600));
        assert_eq!(plan.backoff(0, 1.2), Duration::from_secs(18));
    }

    #[test]
    fn provider_ids_with_path_tricks_are_refused() {
        assert!(Provider::OpenaiBatch.valid_job_id("batch_abc-1.2"));
        assert!(!Provider::OpenaiBatch.valid_job_id("../admin"));
        assert!(!Provider::OpenaiBatch.valid_job_id("a/b"));
        assert!(!Provider::OpenaiBatch.valid_job_id("a?x=1"));
        assert!(Provider::OpenaiEvalRun.valid_job_id("eval_1/evalrun_2"));
        assert_eq!(Provider::GeminiBatch.job_id("batches/b1"), "b1");
        assert_eq!(Provider::OpenaiBatch.job_id("batches/b1"), "batches/b1");
        assert!(!Provider::OpenaiEvalRun.valid_job_id("evalrun_2"));
        assert_eq!(
            Provider::OpenaiEvalRun
                .status_path("eval_1/evalrun_2")
                .unwrap(),
            "/evals/eval_1/runs/evalrun_2"
        );
        assert_eq!(
            Provider::GeminiBatch.cancel_path("b1").unwrap(),
            "/batches/b1:cancel"
        );
    }
}
