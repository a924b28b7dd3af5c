//! The job tracker: long-running AI jobs followed by webhooks when they come and by
//! polling when they don't, with exactly one outcome per job.
//!
//! Everything a job learns goes through [`Tracker::observe`], which the store applies in
//! one transaction with the events it emits ([`hookline_core::job`] holds the rule). Due
//! polls live in the store, one per job, claimed under a lease like deliveries
//! ([`JobStore::claim_polls`]), so nodes share them, a restart loses none, and memory holds
//! only the polls in flight (at most [`TrackConfig::concurrency`]). Each provider family
//! has a budget of calls a second, in total over every node: a node starts its calls at
//! least the live nodes ÷ the budget apart ([`DeliveryQueue::heartbeat`] counts the
//! nodes), and claims a family's polls only as fast as its share lets it make them.

mod client;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hookline_core::job::{
    Family, Job, JobStatus, NextPoll, Observation, ObservedBy, Provider, read_webhook,
};
use hookline_core::store::{
    DeliveryQueue, DuePoll, JobObservation, JobStore, JobTarget, NewJob, Observed,
};
use hookline_core::{Code, Error, Result, SharedClock};
use rand::Rng;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;

pub use client::ProviderAccess;

use client::{Answer, ProviderClient};

/// How often the tracker announces itself and learns how many nodes share the budgets.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
const HEARTBEAT_TTL: Duration = Duration::from_secs(6);
/// How often kept webhooks older than their retention are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(600);
/// Most polls one claim takes.
const CLAIM_BATCH: usize = 64;
/// Longest a claim waits, once a poll slot is free, for a quarter of them to be.
const GATHER_FOR: Duration = Duration::from_millis(100);
/// How early a call may start before its turn under a budget (see `Tracker::spend`).
const BURST: Duration = Duration::from_millis(5);
/// How many status calls in a row may fail to complete a thin webhook before the end its
/// event announced is taken as the job's outcome.
const ANNOUNCED_TRIES: u32 = 3;

/// How the tracker polls. [`Default`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct TrackConfig {
    /// Each family's API: base URL, credential, budget.
    pub access: BTreeMap<Family, ProviderAccess>,
    /// Longest a call to a provider may take. Default 30 s.
    pub request_timeout: Duration,
    /// Polls in flight at once on this node. Default 32.
    pub concurrency: usize,
    /// How long a claimed poll is this node's; a node that dies mid-poll gives its polls
    /// back when it restarts, or others take them when their leases run out. Default 2 min.
    pub lease: Duration,
    /// Longest sleep between looks at the due polls. Default 1 s.
    pub idle_poll: Duration,
    /// How long a webhook for a job not yet registered is kept for it. Default 24 h.
    pub unmatched_retention: Duration,
    /// The retention of the payloads of the events jobs emit.
    pub payload_retention: Option<Duration>,
    /// This node's name in poll leases (the delivery engine's node id).
    pub node_id: String,
}

impl Default for TrackConfig {
    fn default() -> Self {
        TrackConfig {
            access: Family::ALL
                .into_iter()
                .map(|family| (family, ProviderAccess::public(family)))
                .collect(),
            request_timeout: Duration::from_secs(30),
            concurrency: 32,
            lease: Duration::from_secs(120),
            idle_poll: Duration::from_secs(1),
            unmatched_retention: Duration::from_secs(24 * 3600),
            payload_retention: None,
            node_id: format!("hookline-{:016x}", rand::random::<u64>()),
        }
    }
}

/// A provider family's budget on this node.
#[derive(Debug)]
struct Budget {
    /// When the next call may start.
    next: tokio::time::Instant,
    /// Polls claimed that have not yet started their call ([`Waiting`]).
    waiting: usize,
}

impl Budget {
    fn new(now: tokio::time::Instant) -> Self {
        Budget {
            next: now,
            waiting: 0,
        }
    }
}

/// A claimed poll that has not yet started its call: counted in its family's
/// [`Budget::waiting`] until dropped (when the call starts, or the poll ends without one).
struct Waiting {
    tracker: Arc<Tracker>,
    family: Family,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(budget) = self.tracker.budgets().get_mut(&self.family) {
            budget.waiting = budget.waiting.saturating_sub(1);
        }
    }
}

/// The job tracker of one node: what the API, the receiving side and the poller call.
pub struct Tracker {
    store: Arc<dyn JobStore>,
    queue: Arc<dyn DeliveryQueue>,
    client: ProviderClient,
    clock: SharedClock,
    /// Wakes the delivery engine once events are queued.
    deliveries: Arc<Notify>,
    /// Wakes the poller: a poll fell due now.
    wake: Notify,
    /// Counts the job changes made on this node, for long polls ([`Tracker::changes`]).
    changes: watch::Sender<u64>,
    budgets: Mutex<BTreeMap<Family, Budget>>,
    /// The providers whose polls are claimed together: each family with a credential, and
    /// the rest.
    claims: Vec<(Option<Family>, Vec<Provider>)>,
    nodes: AtomicUsize,
    config: TrackConfig,
}

impl Tracker {
    pub fn new(
        store: Arc<dyn JobStore>,
        queue: Arc<dyn DeliveryQueue>,
        config: TrackConfig,
        deliveries: Arc<Notify>,
        clock: SharedClock,
    ) -> Self {
        let client = ProviderClient::new(config.access.clone(), config.request_timeout);
        let callable = |provider: &Provider| provider.family().filter(|f| client.can_call(*f));
        let mut claims: Vec<(Option<Family>, Vec<Provider>)> = Family::ALL
            .into_iter()
            .filter(|family| client.can_call(*family))
            .map(|family| {
                let providers = Provider::ALL
                    .into_iter()
                    .filter(|p| p.family() == Some(family))
                    .collect();
                (Some(family), providers)
            })
            .collect();
        let rest: Vec<Provider> = Provider::ALL
            .into_iter()
            .filter(|p| callable(p).is_none())
            .collect();
        claims.push((None, rest));
        Tracker {
            store,
            queue,
            client,
            claims,
            clock,
            deliveries,
            wake: Notify::new(),
            changes: watch::channel(0).0,
            budgets: Mutex::default(),
            nodes: AtomicUsize::new(1),
            config,
        }
    }

    /// Whether status calls can be made to `family` (a credential is configured).
    pub fn can_call(&self, family: Family) -> bool {
        self.client.can_call(family)
    }

    /// The longest a call to a provider may take.
    pub fn request_timeout(&self) -> Duration {
        self.config.request_timeout
    }

    /// The retention of the payloads of job events.
    pub fn payload_retention(&self) -> Option<Duration> {
        self.config.payload_retention
    }

    /// From when kept webhooks still count for a job registered at `now`.
    pub fn unmatched_since(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - chrono::Duration::from_std(self.config.unmatched_retention)
            .unwrap_or(chrono::Duration::MAX)
    }

    /// A receiver that sees a new value whenever a job changes on this node.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
        self.deliveries.notify_one();
    }

    /// Stores a new job (with the webhooks kept for it applied).
    pub async fn register(&self, new: NewJob) -> Result<Job> {
        let due_now = new.poll_due <= self.clock.now();
        let timeline = new.job.timeline.len();
        let job = self.store.create_job(new).await?;
        self.changed();
        // Its first poll is due at once, or an observation applied at its registration (a
        // kept thin webhook, what its provider answered) may have made it so: the claim
        // loop looks now rather than at its next look.
        if due_now || job.timeline.len() != timeline {
            self.wake.notify_one();
        }
        Ok(job)
    }

    pub async fn observe(&self, observation: JobObservation) -> Result<Observed> {
        let poll_now = matches!(observation.observation.next_poll, NextPoll::At(_));
        let observed = self.store.observe_job(observation).await?;
        if let Observed::Applied(_) = observed {
            self.changed();
            if poll_now {
                self.wake.notify_one();
            }
        }
        Ok(observed)
    }

    /// Offers a webhook accepted at a source of `source_type` to the tracker: if it
    /// speaks of a job (registered or not yet), it is observed. `None` when it does not.
    pub async fn offer_webhook(&self, source_type: &str, body: &[u8]) -> Result<Option<Observed>> {
        let now = self.clock.now();
        let Some(report) = read_webhook(source_type, body, now, |family| self.can_call(family))
        else {
            return Ok(None);
        };
        let observed = self
            .observe(JobObservation {
                target: JobTarget::Match(report.match_key),
                observation: report.observation,
                poller: None,
                payload_retention: self.config.payload_retention,
            })
            .await?;
        Ok(Some(observed))
    }

    /// Reports a job's state as the API was told it (`custom` jobs' workers).
    pub async fn report(
        &self,
        key: &str,
        status: JobStatus,
        progress: Option<Value>,
        result: Option<Value>,
        error: Option<Value>,
    ) -> Result<Job> {
        let observation = Observation {
            at: self.clock.now(),
            source: ObservedBy::Api,
            provider_status: None,
            status: Some(status),
            progress,
            result,
            error,
            next_poll: NextPoll::Keep,
        };
        self.applied(key, observation).await
    }

    async fn applied(&self, key: &str, observation: Observation) -> Result<Job> {
        let observed = self
            .observe(JobObservation {
                target: JobTarget::Key(key.to_owned()),
                observation,
                poller: None,
                payload_retention: self.config.payload_retention,
            })
            .await?;
        match observed {
            Observed::Applied(job) => Ok(*job),
            Observed::Kept => unreachable!("a job found by key is never kept"),
        }
    }

    /// Cancels a job: asks the provider first where it has a cancel call, then the job
    /// ends `cancelled`. A job that has ended already is a conflict.
    pub async fn cancel(&self, job: &Job) -> Result<Job> {
        if job.status.is_terminal() {
            return Err(Error::Conflict {
                code: Code::Conflict,
                detail: format!("the job has ended already ({})", job.status),
            });
        }
        let mut answer = None;
        if let (Some(family), Some(id)) = (job.provider.family(), &job.provider_job_id)
            && self.can_call(family)
        {
            self.spend(family).await;
            match self.client.cancel(job.provider, id).await {
                Some(Answer::Object(object)) => answer = Some(object),
                Some(Answer::RateLimited(_)) => {
                    return Err(provider_unavailable(family, "rate limited the cancel call"));
                }
                Some(Answer::Failed(reason)) => return Err(provider_unavailable(family, &reason)),
                None => {}
            }
        }
        let observation = Observation {
            at: self.clock.now(),
            source: ObservedBy::Api,
            provider_status: answer
                .as_ref()
                .and_then(|object| job.provider.read(object).provider_status),
            status: Some(JobStatus::Cancelled),
            progress: None,
            result: answer,
            error: None,
            next_poll: NextPoll::Keep,
        };
        self.applied(job.id.as_str(), observation).await
    }

    /// Submits `request` to the provider's create call; returns the provider's id and
    /// its answer.
    pub async fn submit(&self, provider: Provider, request: &Value) -> Result<(String, Value)> {
        let family = provider.family().ok_or_else(|| {
            Error::validation(
                &["body", "request"],
                "custom jobs have no provider to submit to",
            )
        })?;
        self.spend(family).await;
        match self.client.submit(provider, request).await {
            Answer::Object(object) => {
                let id = object
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|id| provider.valid_job_id(id))
                    .ok_or_else(|| provider_unavailable(family, "the answer carries no job id"))?
                    .to_owned();
                Ok((id, object))
            }
            Answer::RateLimited(_) => Err(provider_unavailable(family, "rate limited the call")),
            Answer::Failed(reason) => Err(provider_unavailable(family, &reason)),
        }
    }

    /// Polls due jobs until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let node = self.config.node_id.clone();
        match self.store.release_polls(&node).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "polls of this node's last run given back"),
            Err(error) => tracing::warn!(%error, "cannot give back this node's polls"),
        }
        // The nodes already running learn of this one at their next heartbeat (and start
        // the calls they had lined up at their old pace); until then they spend the
        // budgets as if it were not there, so it polls only after that.
        self.beat().await;
        tokio::select! {
            () = tokio::time::sleep(HEARTBEAT_INTERVAL + self.config.idle_poll) => {}
            () = shutdown.cancelled() => return,
        }
        let heartbeat = tokio::spawn(Arc::clone(&self).heartbeats(shutdown.clone()));
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        let mut passes = 0usize;
        // When each group's last claim found nothing due.
        let mut found_none: Vec<Option<tokio::time::Instant>> = vec![None; self.claims.len()];
        let mut last_purge = tokio::time::Instant::now();
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if last_purge.elapsed() >= PURGE_INTERVAL {
                last_purge = tokio::time::Instant::now();
                let before = self.unmatched_since(self.clock.now());
                if let Err(error) = self.store.purge_unmatched(before).await {
                    tracing::warn!(%error, "cannot purge kept webhooks");
                }
            }
            // Polls end one at a time: a claim for each slot as it frees would be a
            // statement (on SQLite, a write) for every poll or two. With fewer than a
            // quarter of the slots free, a claim waits for one, then up to GATHER_FOR for
            // a quarter.
            let quarter = (self.config.concurrency / 4).clamp(1, CLAIM_BATCH);
            if slots.available_permits() < quarter {
                if slots.available_permits() == 0 {
                    tokio::select! {
                        permit = Arc::clone(&slots).acquire_owned() => drop(permit),
                        () = shutdown.cancelled() => break,
                    }
                }
                let quarter = u32::try_from(quarter).expect("at most CLAIM_BATCH");
                tokio::select! {
                    permits = Arc::clone(&slots).acquire_many_owned(quarter) => drop(permits),
                    () = tokio::time::sleep(GATHER_FOR) => {}
                    () = shutdown.cancelled() => break,
                }
            }
            // Each family's polls are claimed apart, only as many as its budget lets this
            // node make within the next look, so no poll waits long under a lease and the
            // nodes share the polls; the rest (custom jobs, families without a
            // credential) wait only for their deadlines.
            // The groups take turns at going first, so that none waits for free slots
            // behind the others for long.
            passes += 1;
            let mut more = false;
            let groups = self.claims.len();
            for n in 0..groups {
                let group = (passes + n) % groups;
                let (family, providers) = &self.claims[group];
                // A group that had nothing due is looked at again after idle_poll, or when
                // a wake-up ends the loop's wait, not at every pass the others' polls make
                // (each poll that ends wakes the loop: a busy loop looks at the groups that
                // have work, and at the others once every idle_poll).
                if found_none[group].is_some_and(|at| at.elapsed() < self.config.idle_poll) {
                    continue;
                }
                let free = slots.available_permits().min(CLAIM_BATCH);
                let limit = match family {
                    Some(family) => self.allowance(*family, free),
                    None => free,
                };
                if limit == 0 {
                    continue;
                }
                let now = self.clock.now();
                let claimed = match self
                    .store
                    .claim_polls(&node, now, self.config.lease, limit, providers)
                    .await
                {
                    Ok(claimed) => {
                        hookline_core::metrics::metrics().record_poll_claim(claimed.len());
                        claimed
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot claim due polls");
                        Vec::new()
                    }
                };
                // A failed claim waits as one that found nothing does.
                found_none[group] = claimed.is_empty().then(tokio::time::Instant::now);
                more |= claimed.len() == limit;
                for due in claimed {
                    let permit = Arc::clone(&slots)
                        .acquire_owned()
                        .await
                        .expect("the semaphore is never closed");
                    let waiting = family.map(|family| self.waiting(family));
                    let tracker = Arc::clone(&self);
                    tokio::spawn(async move {
                        tracker.poll(due, waiting).await;
                        drop(permit);
                    });
                }
            }
            if !more {
                tokio::select! {
                    () = self.wake.notified() => found_none.fill(None),
                    () = tokio::time::sleep(self.config.idle_poll) => {}
                    () = shutdown.cancelled() => break,
                }
            }
        }
        heartbeat.abort();
    }

    /// Announces this node and learns how many share the budgets.
    async fn beat(&self) {
        match self
            .queue
            .heartbeat(&self.config.node_id, HEARTBEAT_TTL)
            .await
        {
            Ok(nodes) => {
                let before = self.nodes.swap(nodes.max(1), Ordering::Relaxed);
                if before != nodes.max(1) {
                    tracing::info!(nodes, "nodes sharing the provider budgets");
                }
            }
            Err(error) => tracing::warn!(%error, "tracker heartbeat failed"),
        }
    }

    /// Announces this node every [`HEARTBEAT_INTERVAL`] until `shutdown`, so that the
    /// nodes count it when they share the budgets.
    async fn heartbeats(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            self.beat().await;
            tokio::select! {
                () = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// The spacing of this node's calls to `family`: the budget divided by the live nodes.
    fn spacing(&self, family: Family) -> Duration {
        let rate = self
            .client
            .access(family)
            .map_or(1.0, |access| access.requests_per_second);
        let nodes = self.nodes.load(Ordering::Relaxed).max(1) as f64;
        Duration::from_secs_f64(nodes / rate.max(0.001))
    }

    fn budgets(&self) -> std::sync::MutexGuard<'_, BTreeMap<Family, Budget>> {
        self.budgets
            .lock()
            .expect("the budgets' lock is never poisoned")
    }

    /// Waits for this node's next turn under `family`'s budget: calls start
    /// [`spacing`](Self::spacing) apart on average, counted from when each really started
    /// (a turn missed by a late wake-up is not made up). A call may start up to
    /// [`BURST`] (or ten spacings, when less) before its turn, so that a high budget is
    /// not held back by the timer's millisecond grain; over any stretch of time the calls
    /// stay within the budget but for that much.
    async fn spend(&self, family: Family) {
        loop {
            let turn = {
                let spacing = self.spacing(family);
                let tolerance = (spacing * 10).min(BURST);
                let mut budgets = self.budgets();
                let now = tokio::time::Instant::now();
                let budget = budgets.entry(family).or_insert(Budget::new(now));
                if now + tolerance >= budget.next {
                    budget.next = budget.next.max(now) + spacing;
                    return;
                }
                budget.next - tolerance
            };
            tokio::time::sleep_until(turn).await;
        }
    }

    /// How many more of `family`'s polls this node may claim now (at most `free`): the
    /// turns its budget gives it before its next look at the due polls, less the polls
    /// claimed already that are waiting for theirs.
    fn allowance(&self, family: Family, free: usize) -> usize {
        let spacing = self.spacing(family);
        let budgets = self.budgets();
        let now = tokio::time::Instant::now();
        let (mut turn, waiting) = budgets
            .get(&family)
            .map_or((now, 0), |budget| (budget.next.max(now), budget.waiting));
        let horizon = now + self.config.idle_poll;
        let mut turns = 0;
        while turns < free + waiting && turn <= horizon {
            turns += 1;
            turn += spacing;
        }
        turns.saturating_sub(waiting)
    }

    /// Counts a claimed poll of `family` as waiting for its turn until the guard drops.
    fn waiting(self: &Arc<Self>, family: Family) -> Waiting {
        let mut budgets = self.budgets();
        let budget = budgets
            .entry(family)
            .or_insert(Budget::new(tokio::time::Instant::now()));
        budget.waiting += 1;
        Waiting {
            tracker: Arc::clone(self),
            family,
        }
    }

    /// One due poll: expire the job at its deadline, or ask the provider and observe the
    /// answer, or move the poll on when the provider did not answer.
    async fn poll(&self, due: DuePoll, waiting: Option<Waiting>) {
        let DuePoll {
            job,
            polls,
            failures,
        } = due;
        let now = self.clock.now();
        if now >= job.deadline {
            if let Some(announced) = announced(&job, now, None) {
                self.record(&job, announced).await;
                return;
            }
            let expired = Observation {
                at: now,
                source: ObservedBy::Poll,
                provider_status: None,
                status: Some(JobStatus::Expired),
                progress: None,
                result: None,
                error: Some(Value::String("the job's deadline passed".into())),
                next_poll: NextPoll::Keep,
            };
            self.record(&job, expired).await;
            return;
        }
        let (Some(family), Some(provider_id)) = (job.provider.family(), &job.provider_job_id)
        else {
            // Nothing to poll: wait for the deadline.
            self.delay(&job, job.deadline, false).await;
            return;
        };
        if !self.can_call(family) {
            tracing::warn!(job = %job.id, family = family.as_str(), "no credential to poll with");
            self.delay(&job, job.deadline, true).await;
            return;
        }
        let plan = job.poll.unwrap_or_else(|| job.provider.default_poll());
        let jitter = rand::thread_rng().gen_range(0.8..=1.2);
        self.spend(family).await;
        drop(waiting);
        match self.client.status(job.provider, provider_id).await {
            Answer::Object(object) => {
                let reading = job.provider.read(&object);
                let at = self.clock.now();
                // The provider may not show yet the end a webhook announced: then its
                // answer goes on the timeline, and the webhook's word decides.
                let announced = announced(&job, at, None)
                    .filter(|_| !reading.status.is_some_and(JobStatus::is_terminal));
                let next_poll = match (&announced, job.poll) {
                    (Some(_), _) => NextPoll::Keep,
                    (None, Some(_)) => NextPoll::At(after(at, plan.backoff(polls, jitter))),
                    (None, None) => NextPoll::At(job.deadline),
                };
                let observation = Observation {
                    at,
                    source: ObservedBy::Poll,
                    provider_status: reading.provider_status,
                    status: reading.status,
                    progress: reading.progress,
                    result: Some(object),
                    error: reading.error,
                    next_poll,
                };
                self.record(&job, observation).await;
                if let Some(announced) = announced {
                    self.record(&job, announced).await;
                }
            }
            Answer::RateLimited(retry_after) => {
                let now = self.clock.now();
                let asked = retry_after
                    .map(|after| after.wait_from(now.into()))
                    .unwrap_or_default();
                let wait = asked.max(plan.backoff(failures, jitter));
                tracing::info!(job = %job.id, wait_ms = wait.as_millis() as u64, "provider rate limited a poll");
                self.delay(&job, after(now, wait), true).await;
            }
            Answer::Failed(reason)
                if failures + 1 >= ANNOUNCED_TRIES && job.announced().is_some() =>
            {
                tracing::warn!(job = %job.id, %reason, "the status call that should complete a webhook failed; its event decides");
                let announced = announced(&job, self.clock.now(), None);
                self.record(&job, announced.expect("announced")).await;
            }
            Answer::Failed(reason) => {
                let wait = plan.backoff(failures, jitter);
                tracing::warn!(job = %job.id, %reason, wait_ms = wait.as_millis() as u64, "poll failed");
                self.delay(&job, after(self.clock.now(), wait), true).await;
            }
        }
    }

    async fn record(&self, job: &Job, observation: Observation) {
        let result = self
            .observe(JobObservation {
                target: JobTarget::Key(job.id.to_string()),
                observation,
                poller: Some(self.config.node_id.clone()),
                payload_retention: self.config.payload_retention,
            })
            .await;
        if let Err(error) = result {
            // The lease runs out and the poll is made again.
            tracing::warn!(job = %job.id, %error, "cannot record a poll");
        }
    }

    async fn delay(&self, job: &Job, due: DateTime<Utc>, failed: bool) {
        let due = job.poll_due(due).unwrap_or(job.deadline);
        if let Err(error) = self
            .store
            .delay_poll(&job.id, &self.config.node_id, due, failed)
            .await
        {
            tracing::warn!(job = %job.id, %error, "cannot move a poll on");
        }
    }
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("client", &self.client)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The end a thin webhook announced for `job` ([`Job::announced`]), as an observation at
/// `at` with the provider's last answer, if any.
fn announced(job: &Job, at: DateTime<Utc>, result: Option<Value>) -> Option<Observation> {
    let (status, event) = job.announced()?;
    Some(Observation {
        at,
        source: ObservedBy::Webhook,
        provider_status: Some(event.to_owned()),
        status: Some(status),
        progress: None,
        result,
        error: None,
        next_poll: NextPoll::Keep,
    })
}

/// `wait` after `at`, or the end of time when that is beyond it (a deadline comes first).
fn after(at: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(wait)
        .ok()
        .and_then(|wait| at.checked_add_signed(wait))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A provider call that failed, answered as the provider being unavailable.
fn provider_unavailable(family: Family, reason: &str) -> Error {
    Error::Refused {
        code: Code::ProviderUnavailable,
        detail: format!("the {} API could not be used: {reason}", family.as_str()),
    }
}
