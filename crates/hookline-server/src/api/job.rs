//! Jobs: `/api/v1/job`. Long-running AI work registered for tracking: the tracker
//! (`hookline_engine::track`) follows it by webhook and by polling, and the job's app gets
//! exactly one outcome event. Reads are open to the job's app's tokens; writes take the
//! admin token.

use std::time::Duration;

use chrono::{DateTime, Utc};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use hookline_core::Code;
use hookline_core::id::AppId;
use hookline_core::id::JobId;
use hookline_core::job::{Job, JobStatus, NextPoll, Observation, ObservedBy, PollPlan, Provider};
use hookline_core::page::ListQuery;
use hookline_core::patch::nullable;
use hookline_core::store::JobFilter;
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ListResponse, app_for, time_query};
use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::extract::{Limit, Query, Timestamp, ValidJson};
use crate::idempotency::{IdempotencyKey, Recorded};
use crate::openapi::Errors;
use crate::validate::{self, Validate, Violations};

/// The longest `?wait=` honoured, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;
/// The longest a job may be tracked: its deadline at most this far from its creation.
const MAX_DEADLINE: chrono::Duration = chrono::Duration::days(30);
/// The deadline when none is given.
const DEFAULT_DEADLINE: chrono::Duration = chrono::Duration::hours(24);
/// The longest wait of a polling plan, in seconds (a day).
const MAX_POLL_SECS: u64 = 24 * 3600;
/// How often a long poll looks at the store when nothing changed on this node (a change
/// made by another node is seen within this).
const WAIT_RECHECK: Duration = Duration::from_millis(100);
/// How much longer than the provider call's timeout a submission holds its idempotency
/// key: its turn under the provider's budget comes first. A node that dies meanwhile
/// frees the key after this.
const PENDING_MARGIN: Duration = Duration::from_secs(300);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(fetch))
        .routes(routes!(cancel))
        .routes(routes!(report))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobIn {
    #[schema(value_type = Provider)]
    pub provider: String,
    /// The job's id at its provider (`{eval_id}/{run_id}` for `openai_eval_run`):
    /// required unless `request` is given; none for `custom` jobs.
    #[serde(default)]
    pub provider_job_id: Option<String>,
    /// The application (id or uid) the job's events go to.
    pub app_id: String,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// When the job expires if it has not ended: in the future, at most 30 days from now;
    /// 24 hours from now when absent.
    #[serde(default)]
    pub deadline: Option<Timestamp>,
    /// Absent: the provider's defaults; `null`: webhooks only, no polling.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<PollIn>)]
    pub poll: Option<Option<PollIn>>,
    /// The provider call to make (a create body); its answer's `id` becomes the
    /// `providerJobId`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub request: Option<Map<String, Value>>,
    /// For a Replicate `request` without a `webhook`: the source whose ingest URL goes in
    /// it (id or uid); the first `replicate` source when not given.
    #[serde(default)]
    pub source_id: Option<String>,
}

/// A polling plan, in seconds (each at most a day); the provider's defaults for what is
/// absent.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PollIn {
    pub after: Option<u64>,
    pub interval: Option<u64>,
    pub max_interval: Option<u64>,
}

impl JobIn {
    fn provider(&self) -> Option<Provider> {
        Provider::parse(&self.provider)
    }
}

impl Validate for JobIn {
    fn validate(&self, v: &mut Violations) {
        let provider = self.provider();
        match provider {
            None => {
                let names: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
                v.add(
                    &["provider"],
                    format!("must be one of {}", names.join(", ")),
                );
            }
            Some(Provider::Custom) => {
                if self.provider_job_id.is_some() {
                    v.add(&["providerJobId"], "custom jobs have no provider id");
                }
                if self.request.is_some() {
                    v.add(&["request"], "custom jobs have no provider to submit to");
                }
            }
            Some(provider) => match (&self.provider_job_id, &self.request) {
                (Some(id), None) if !provider.valid_job_id(provider.job_id(id)) => v.add(
                    &["providerJobId"],
                    if provider == Provider::OpenaiEvalRun {
                        "must be `{eval_id}/{run_id}`, each of letters, digits, `-`, `_` and `.`"
                    } else {
                        "must be 1 to 200 letters, digits, `-`, `_` and `.`"
                    },
                ),
                (Some(_), Some(_)) => v.add(
                    &["providerJobId"],
                    "give either providerJobId or request: the request's answer names the job",
                ),
                (None, None) => v.add(&["providerJobId"], "is required for this provider"),
                (None, Some(_)) if provider.submit_path().is_none() => {
                    v.add(&["request"], "Hookline cannot submit jobs of this provider")
                }
                _ => {}
            },
        }
        validate::uid(v, "uid", self.uid.as_deref(), JobId::PREFIX);
        if let Some(group) = &self.group {
            validate::slug(v, "group", group, 256);
        }
        if let Some(metadata) = &self.metadata {
            validate::json_depth(v, "metadata", &Value::Object(metadata.clone()).to_string());
        }
        if let Some(request) = &self.request {
            validate::json_depth(v, "request", &Value::Object(request.clone()).to_string());
        }
        if let Some(Some(poll)) = &self.poll {
            for (field, value) in [
                ("after", poll.after),
                ("interval", poll.interval),
                ("maxInterval", poll.max_interval),
            ] {
                if value.is_some_and(|secs| secs > MAX_POLL_SECS) {
                    v.add(
                        &["poll", field],
                        format!("must be at most {MAX_POLL_SECS} seconds"),
                    );
                }
            }
            if poll.interval == Some(0) {
                v.add(&["poll", "interval"], "must be at least 1 second");
            }
            if let (Some(interval), Some(max)) = (poll.interval, poll.max_interval)
                && max < interval
            {
                v.add(&["poll", "maxInterval"], "must not be below interval");
            }
        }
    }
}

/// The polling plan `poll` asks for over `provider`'s defaults.
fn plan(provider: Provider, poll: Option<Option<PollIn>>) -> Option<PollPlan> {
    let defaults = provider.default_poll();
    let given = match poll {
        None => PollIn::default(),
        Some(None) => return None,
        Some(Some(given)) => given,
    };
    let secs = |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_secs);
    let interval = secs(given.interval, defaults.interval);
    Some(PollPlan {
        after: secs(given.after, defaults.after),
        interval,
        max_interval: secs(given.max_interval, defaults.max_interval).max(interval),
    })
}

#[utoipa::path(post, path = "/job", operation_id = "v1.job.create", tag = "Job",
    request_body = JobIn,
    responses((status = 201, description = "Registered (and submitted to its provider, with `request`)", body = Job), Errors))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    idempotency: Option<Extension<IdempotencyKey>>,
    ValidJson(body): ValidJson<JobIn>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let provider = body.provider().expect("validated");
    let app = app_for(&state, &caller, &body.app_id).await?;
    let now = state.clock.now();
    let deadline = match body.deadline {
        Some(Timestamp(deadline)) if deadline <= now => {
            return Err(ApiError::invalid(
                &["body", "deadline"],
                "must be in the future",
            ));
        }
        Some(Timestamp(deadline)) if deadline > now + MAX_DEADLINE => {
            return Err(ApiError::invalid(
                &["body", "deadline"],
                "must be at most 30 days from now",
            ));
        }
        Some(Timestamp(deadline)) => deadline,
        None => now + DEFAULT_DEADLINE,
    };
    let poll = match provider {
        Provider::Custom => None,
        _ => plan(provider, body.poll),
    };
    let tracker = &state.tracker;
    if let Some(family) = provider.family()
        && (poll.is_some() || body.request.is_some())
        && !tracker.can_call(family)
    {
        return Err(hookline_core::Error::refused(
            Code::ProviderNotConfigured,
            format!(
                "no {} credential is configured on this server (see HOOKLINE_{}_*): it cannot \
                 poll or submit {provider} jobs; register with \"poll\": null to track them \
                 by webhook alone",
                family.as_str(),
                family.as_str().to_uppercase(),
            ),
        )
        .into());
    }

    if body.request.is_some()
        && let Some(uid) = &body.uid
        && state.store.get_job(uid).await.is_ok()
    {
        // Found before anything is submitted (the job could not be stored after).
        return Err(hookline_core::Error::conflict("a job with this uid already exists").into());
    }
    let idempotency = idempotency.map(|Extension(key)| key);
    // A job submitted to its provider claims its idempotency key first: a retry that
    // arrives meanwhile, on any node, must not submit it a second time.
    let claimed = match (&body.request, &idempotency) {
        (Some(_), Some(key)) => {
            let pending = key.pending(now, tracker.request_timeout() + PENDING_MARGIN);
            match state.store.claim_idempotent(&pending, now).await {
                Ok(()) => Some(key),
                Err(error) if error.code() == Code::IdempotencyConflict => {
                    return crate::idempotency::replay_first(&state, key, error).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
        _ => None,
    };
    let created = register(
        &state,
        body,
        provider,
        app.id,
        now,
        deadline,
        poll,
        &idempotency,
        claimed.is_some(),
    )
    .await;
    if created.is_err()
        && let Some(key) = claimed
        && let Err(error) = state.store.release_pending(key.stored_key()).await
    {
        tracing::warn!(%error, "cannot release an idempotency key");
    }
    created
}

/// Submits the job if it carries a request, and stores it.
#[allow(clippy::too_many_arguments)]
async fn register(
    state: &AppState,
    body: JobIn,
    provider: Provider,
    app_id: AppId,
    now: DateTime<Utc>,
    deadline: DateTime<Utc>,
    poll: Option<PollPlan>,
    idempotency: &Option<IdempotencyKey>,
    claimed: bool,
) -> Result<Response, ApiError> {
    let tracker = &state.tracker;
    let (provider_job_id, submitted) = match body.request {
        Some(mut request) => {
            if provider.family() == Some(hookline_core::job::Family::Replicate)
                && !request.contains_key("webhook")
                && let Some(url) = replicate_webhook(state, body.source_id.as_deref()).await?
            {
                request.insert("webhook".into(), Value::String(url));
            }
            let (id, answer) = tracker.submit(provider, &Value::Object(request)).await?;
            let reading = provider.read(&answer);
            let observation = Observation {
                at: now,
                source: ObservedBy::Api,
                provider_status: reading.provider_status,
                status: reading.status,
                progress: reading.progress,
                result: Some(answer),
                error: reading.error,
                next_poll: NextPoll::Keep,
            };
            (Some(id), Some(observation))
        }
        None => (
            body.provider_job_id
                .map(|id| provider.job_id(&id).to_owned()),
            None,
        ),
    };

    let mut job = Job::new(provider, provider_job_id, app_id, now, deadline);
    job.uid = body.uid;
    job.group = body.group;
    job.metadata = body.metadata.unwrap_or_default().into_iter().collect();
    job.poll = poll;
    // The store writes the job it stored as the record's body.
    let record = idempotency
        .as_ref()
        .map(|key| key.record(StatusCode::CREATED, Vec::new(), now));
    let mut registration = job.registration(
        record,
        submitted,
        tracker.unmatched_since(now),
        tracker.payload_retention(),
    );
    registration.replaces_pending = claimed;
    let job = match (tracker.register(registration).await, idempotency) {
        (Ok(job), _) => job,
        // Another request with this key was carried out first (a registration that
        // raced this one finds the provider id taken as well). A submission holds its
        // key: any conflict is its own.
        (Err(error), Some(key))
            if error.code() == Code::IdempotencyConflict
                || (error.code() == Code::Conflict && !claimed) =>
        {
            return crate::idempotency::replay_first(state, key, error).await;
        }
        (Err(error), _) => return Err(error.into()),
    };
    let mut response = (StatusCode::CREATED, Json(job)).into_response();
    if idempotency.is_some() {
        response.extensions_mut().insert(Recorded);
    }
    Ok(response)
}

/// The ingest URL Replicate should send a submitted job's webhooks to.
async fn replicate_webhook(
    state: &AppState,
    source: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let source = match source {
        Some(key) => Some(state.store.get_source(key).await?),
        None => {
            let page = state
                .store
                .list_sources(&ListQuery::first(
                    ListQuery::MAX_LIMIT,
                    hookline_core::page::Order::Ascending,
                ))
                .await?;
            page.data.into_iter().find(|s| s.source_type == "replicate")
        }
    };
    Ok(source.map(|source| crate::ingest::source::ingest_url(state, &source.token)))
}

/// A job the caller may see.
async fn visible(state: &AppState, caller: &Caller, key: &str) -> Result<Job, ApiError> {
    match state.store.get_job(key).await {
        Ok(job) => {
            caller.require_app(&job.app_id)?;
            Ok(job)
        }
        Err(hookline_core::Error::NotFound(_)) if matches!(caller.role, Role::App(_)) => Err(
            ApiError::Forbidden("this token is scoped to another application"),
        ),
        Err(error) => Err(error.into()),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct WaitParams {
    /// Seconds (at most 60) to wait for the status to differ from `status`.
    wait: Option<u64>,
    /// The status the caller knows; the job's current one when absent.
    #[param(value_type = Option<JobStatus>, inline)]
    status: Option<String>,
}

#[utoipa::path(get, path = "/job/{job_id}", operation_id = "v1.job.get", tag = "Job",
    params(WaitParams),
    responses((status = 200, description = "The job; with `wait`, once its status differs from `status` or the wait is over", body = Job), Errors))]
async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
    Path(job_id): Path<String>,
    Query(params): Query<WaitParams>,
) -> Result<Json<Job>, ApiError> {
    let mut job = visible(&state, &caller, &job_id).await?;
    let Some(wait) = params.wait else {
        return Ok(Json(job));
    };
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::invalid(
            &["query", "wait"],
            format!("must be at most {MAX_WAIT_SECS} seconds"),
        ));
    }
    let known = match params.status.as_deref() {
        Some(text) => JobStatus::parse(text).ok_or_else(|| {
            ApiError::invalid(
                &["query", "status"],
                "must be a job status (queued, running, …)",
            )
        })?,
        None => job.status,
    };
    let until = tokio::time::Instant::now() + Duration::from_secs(wait);
    let mut changes = state.tracker.changes();
    while job.status == known {
        let now = tokio::time::Instant::now();
        if now >= until {
            break;
        }
        let nap = WAIT_RECHECK.min(until - now);
        // A change on this node wakes the wait at once; one on another node is seen at
        // the next look.
        let _ = tokio::time::timeout(nap, changes.changed()).await;
        job = visible(&state, &caller, job.id.as_str()).await?;
    }
    Ok(Json(job))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListParams {
    #[serde(default)]
    limit: Limit,
    iterator: Option<String>,
    /// Only this application's jobs (id or uid); an app token sees only its own.
    app_id: Option<String>,
    #[param(value_type = Option<Provider>, inline)]
    provider: Option<String>,
    #[param(value_type = Option<JobStatus>, inline)]
    status: Option<String>,
    group: Option<String>,
    /// Only the jobs created before this time (not with `after`).
    before: Option<Timestamp>,
    /// Only the jobs created after this time (not with `before`).
    after: Option<Timestamp>,
}

#[utoipa::path(get, path = "/job", operation_id = "v1.job.list", tag = "Job",
    params(ListParams),
    responses((status = 200, description = "A page of jobs, newest first", body = ListResponse<Job>), Errors))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Json<ListResponse<Job>>, ApiError> {
    let app_id = match (&params.app_id, &caller.role) {
        (Some(key), _) => Some(app_for(&state, &caller, key).await?.id),
        (None, Role::App(own)) => Some(own.clone()),
        (None, Role::Admin) => None,
    };
    let provider = params
        .provider
        .as_deref()
        .map(|text| {
            Provider::parse(text)
                .ok_or_else(|| ApiError::invalid(&["query", "provider"], "unknown provider"))
        })
        .transpose()?;
    let status = params
        .status
        .as_deref()
        .map(|text| {
            JobStatus::parse(text)
                .ok_or_else(|| ApiError::invalid(&["query", "status"], "unknown job status"))
        })
        .transpose()?;
    let filter = JobFilter {
        app_id,
        provider,
        status,
        group: params.group,
        created_after: None,
        created_before: None,
    };
    let query = time_query(
        params.limit,
        params.iterator,
        params.before,
        params.after,
        |t| JobId::boundary(t).into_string(),
    )?;
    let page = state.store.list_jobs(&filter, &query).await?;
    Ok(Json(ListResponse::from_page(page, |job| job)))
}

#[utoipa::path(post, path = "/job/{job_id}/cancel", operation_id = "v1.job.cancel", tag = "Job",
    responses((status = 200, description = "The job, cancelled (a job that has ended is a conflict)", body = Job), Errors))]
async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(job_id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    caller.require_admin()?;
    let job = visible(&state, &caller, &job_id).await?;
    Ok(Json(state.tracker.cancel(&job).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StatusIn {
    #[schema(value_type = JobStatus)]
    status: String,
    #[serde(default)]
    progress: Option<Value>,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

impl Validate for StatusIn {
    fn validate(&self, v: &mut Violations) {
        if JobStatus::parse(&self.status).is_none() {
            let names: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
            v.add(&["status"], format!("must be one of {}", names.join(", ")));
        }
        for (field, value) in [
            ("progress", &self.progress),
            ("result", &self.result),
            ("error", &self.error),
        ] {
            if let Some(value) = value {
                validate::json_depth(v, field, &value.to_string());
            }
        }
    }
}

#[utoipa::path(post, path = "/job/{job_id}/status", operation_id = "v1.job.report-status", tag = "Job",
    request_body = StatusIn,
    responses((status = 200, description = "The custom job with the report applied (once it has ended, a report only goes on its timeline)", body = Job), Errors))]
async fn report(
    State(state): State<AppState>,
    caller: Caller,
    Path(job_id): Path<String>,
    ValidJson(body): ValidJson<StatusIn>,
) -> Result<Json<Job>, ApiError> {
    caller.require_admin()?;
    let job = visible(&state, &caller, &job_id).await?;
    if job.provider != Provider::Custom {
        return Err(hookline_core::Error::conflict(format!(
            "only custom jobs take status reports; {} jobs are followed at their provider",
            job.provider
        ))
        .into());
    }
    let status = JobStatus::parse(&body.status).expect("validated");
    let job = state
        .tracker
        .report(
            job.id.as_str(),
            status,
            body.progress,
            body.result,
            body.error,
        )
        .await?;
    Ok(Json(job))
}
