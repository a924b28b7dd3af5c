//! Long-running AI jobs, their polls and the webhooks kept for them: `impl JobStore`.
//!
//! A change to a job reads it `FOR UPDATE`, applies the observation ([`Job::observe`])
//! and writes it back in one transaction, so two nodes observing one job take turns.
//! Registrations and observations are group-committed ([`JobWrite`]): a batch takes the
//! locks of its match keys, of its jobs' rows and of the groups it may end, each in order,
//! and carries out the writes about one job one after the other, as their own transactions
//! would.
//! Creating a job and keeping a webhook for a job not yet registered both take an
//! advisory lock on the match key first, so a webhook racing its job's registration is
//! either kept and taken by the creation, or finds the job. A job ending takes an advisory
//! lock on its group before counting it, so the group's last two jobs ending at once on
//! two nodes cannot both miss (or both see) the end.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use futures_util::future::try_join_all;
use hookline_core::id::JobId;
use hookline_core::job::{
    GroupCounts, Job, JobStatus, NextPoll, Observation, Provider, group_completed,
};
use hookline_core::page::{ListQuery, Page};
use hookline_core::store::{
    DuePoll, JobFilter, JobObservation, JobStore, JobTarget, NewJob, NewMessage, Observed,
};
use hookline_core::{Error, Result};
use tokio_postgres::Row;

use super::idempotency::claim_idempotent;
use super::messages::insert_message;
use super::{Select, changed, execute, key_column, query_opt, query_rows};
use crate::PostgresStore;
use crate::error::{duplicate, storage};
use crate::group::{Grouped, Stored};
use crate::rows::{Columns, ms, read};

const JOB_COLUMNS: &str = "body, polls, failures";
/// Most polls one claim leases, whatever it asks for (see `claim_polls`).
const CLAIM_MOST: i64 = 1000;

fn due_poll(columns: &mut Columns<'_>) -> Result<DuePoll> {
    let body: String = columns.take()?;
    Ok(DuePoll {
        job: serde_json::from_str(&body).map_err(Error::storage)?,
        polls: u32::try_from(columns.take::<i32>()?).unwrap_or(0),
        failures: u32::try_from(columns.take::<i32>()?).unwrap_or(0),
    })
}

fn rows_to_polls(rows: &[Row]) -> Result<Vec<DuePoll>> {
    rows.iter().map(|row| read(row, due_poll)).collect()
}

/// The key of the lock that serializes the ends of `group`'s jobs in `app`.
fn group_lock(app: &str, group: &str) -> String {
    format!("group/{app}/{group}")
}

/// Serializes the changes about one key (a match key, a group) until the transaction ends.
async fn lock_key(db: &impl GenericClient, key: &str) -> Result<()> {
    lock_keys(db, &[key]).await
}

/// [`lock_key`] for each of `keys`, in their order.
async fn lock_keys(db: &impl GenericClient, keys: &[&str]) -> Result<()> {
    execute(
        db,
        "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || '/' || key, 0))
         FROM unnest($1::text[]) AS key",
        &[&keys],
    )
    .await
    .map_err(storage)?;
    Ok(())
}

async fn save(
    db: &impl GenericClient,
    job: &Job,
    poll_due: Option<Option<DateTime<Utc>>>,
    poller: Option<&str>,
) -> Result<()> {
    let body = serde_json::to_string(job).map_err(Error::storage)?;
    let set_due = poll_due.is_some();
    execute(
        db,
        // A poll asked for while one is in flight (a thin webhook's) is kept in
        // `poll_asked_at`, so that the poll's own next time cannot put it off.
        "UPDATE job SET status = $2, body = $3, updated_at = $4,
             poll_due_at = CASE WHEN NOT $5 THEN poll_due_at
                 WHEN $7::text IS NULL OR $6::timestamptz IS NULL THEN $6::timestamptz
                 ELSE LEAST($6::timestamptz, poll_asked_at) END,
             poll_asked_at = CASE WHEN $7::text IS NOT NULL AND lease_owner = $7 THEN NULL
                 WHEN $5 AND lease_owner IS NOT NULL THEN LEAST($6::timestamptz, poll_asked_at)
                 ELSE poll_asked_at END,
             polls = CASE WHEN $7::text IS NULL THEN polls ELSE polls + 1 END,
             failures = CASE WHEN $7::text IS NULL AND NOT ($5 AND $6::timestamptz IS NOT NULL)
                 THEN failures ELSE 0 END,
             lease_until = CASE WHEN lease_owner = $7 THEN NULL ELSE lease_until END,
             lease_owner = CASE WHEN lease_owner = $7 THEN NULL ELSE lease_owner END
         WHERE id = $1",
        &[
            &job.id.as_str(),
            &job.status.code(),
            &body,
            &ms(job.updated_at),
            &set_due,
            &poll_due.flatten().map(ms),
            &poller,
        ],
    )
    .await
    .map_err(storage)?;
    Ok(())
}

/// Creates an event's message unless one with its `eventId` exists: the insert finds it
/// without failing a statement (the job's row lock, or its group's lock, keeps a second
/// writer of the same event out meanwhile, but for another write of the same group
/// commit, whose message then stands for this one).
async fn emit(db: &impl GenericClient, new: &NewMessage) -> Result<()> {
    // No `hookline_due` notification: NOTIFY serializes the commits of every transaction
    // that sends one (measured: 320 polls a second with it, one fsync each), and the node
    // that observed the job wakes its own engine (`Tracker::observe`); other nodes find
    // the deliveries at their next look.
    match insert_message(db, new).await? {
        Ok(_) | Err(Error::Conflict { .. }) => Ok(()),
        Err(error) => Err(error),
    }
}

async fn apply(
    db: &impl GenericClient,
    mut job: Job,
    observation: &Observation,
    poller: Option<&str>,
    retention: Option<Duration>,
) -> Result<Job> {
    let was_open = !job.status.is_terminal();
    let events = job.observe(observation);
    // A webhook kept for a job registered later is news at the registration.
    let at = observation.at.max(job.created_at);
    let poll_due = match (job.status.is_terminal(), observation.next_poll) {
        (true, _) => Some(None),
        (false, NextPoll::At(at)) => Some(job.poll_due(at)),
        (false, NextPoll::Keep) => None,
    };
    save(db, &job, poll_due, poller).await?;
    for event in events {
        emit(db, &job.event_message(event, at, retention)).await?;
    }
    if was_open
        && job.status.is_terminal()
        && let Some(group) = &job.group
    {
        lock_key(db, &group_lock(job.app_id.as_str(), group)).await?;
        if let Some(counts) = group_counts(db, &job, group).await? {
            let message = group_completed(&job.app_id, group, &counts, at, retention);
            emit(db, &message).await?;
        }
    }
    Ok(job)
}

async fn group_counts(
    db: &impl GenericClient,
    job: &Job,
    group: &str,
) -> Result<Option<GroupCounts>> {
    let rows = query_rows(
        db,
        "SELECT status, COUNT(*) FROM job WHERE app_id = $1 AND grp = $2 GROUP BY status",
        &[&job.app_id.as_str(), &group],
    )
    .await
    .map_err(storage)?;
    let mut counts = GroupCounts::default();
    for row in rows {
        let (code, count): (i16, i64) = (row.get(0), row.get(1));
        let status = JobStatus::from_code(code).ok_or_else(|| {
            Error::storage(std::io::Error::other(format!(
                "unknown job status code {code}"
            )))
        })?;
        if !status.is_terminal() {
            return Ok(None);
        }
        counts.0.insert(
            status.as_str().to_owned(),
            u64::try_from(count).unwrap_or(0),
        );
    }
    Ok(Some(counts))
}

/// The match key webhooks find `job` by, if it has a provider job id.
fn match_key(job: &Job) -> Option<String> {
    job.provider_job_id
        .as_deref()
        .and_then(|id| job.provider.match_key(id))
}

/// Registers a job in `tx` ([`JobStore::create_job`]): its answer (a provider job id
/// already registered is an answer, found before anything is written), or the error of a
/// statement, which fails the transaction.
async fn create(tx: &Transaction<'_>, new: &NewJob) -> Result<Result<Job>> {
    let job = &new.job;
    let match_key = match_key(job);
    let body = serde_json::to_string(job).map_err(Error::storage)?;
    // The batch holds the match key's lock (`JobWrite::store`).
    if let Some(key) = &match_key {
        let taken = query_opt(tx, "SELECT 1 FROM job WHERE match_key = $1", &[key])
            .await
            .map_err(storage)?
            .is_some();
        if taken {
            return Ok(Err(Error::conflict(
                "a job with this provider and providerJobId already exists",
            )));
        }
    }
    execute(
        tx,
        "INSERT INTO job (id, uid, app_id, provider, match_key, grp, status, body,
             poll_due_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        &[
            &job.id.as_str(),
            &job.uid,
            &job.app_id.as_str(),
            &job.provider.as_str(),
            &match_key,
            &job.group,
            &job.status.code(),
            &body,
            &job.poll_due(new.poll_due).map(ms),
            &ms(job.created_at),
        ],
    )
    .await
    .map_err(duplicate("a job"))?;
    emit(tx, &new.created_message).await?;
    let mut job = new.job.clone();
    if let Some(answer) = &new.submitted {
        job = apply(tx, job, answer, None, new.payload_retention).await?;
    }
    if let Some(key) = &match_key {
        let kept = query_rows(
            tx,
            "DELETE FROM job_unmatched WHERE match_key = $1
             RETURNING id, observation, received_at",
            &[key],
        )
        .await
        .map_err(storage)?;
        let mut kept: Vec<(i64, String, DateTime<Utc>)> = kept
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .filter(|(_, _, received)| *received >= ms(new.unmatched_since))
            .collect();
        kept.sort_by_key(|(id, _, _)| *id);
        for (_, text, _) in kept {
            let observation: Observation = serde_json::from_str(&text).map_err(Error::storage)?;
            job = apply(tx, job, &observation, None, new.payload_retention).await?;
        }
    }
    if let Some(record) = &new.idempotency {
        let mut record = record.clone();
        record.response.body = serde_json::to_vec(&job).map_err(Error::storage)?;
        claim_idempotent(tx, &record, job.created_at, new.replaces_pending).await?;
    }
    Ok(Ok(job))
}

/// Applies an observation in `tx` ([`JobStore::observe_job`]): what it did (a job named
/// by a key that finds none is an answer, found before anything is written), or the error
/// of a statement, which fails the transaction.
async fn observe(
    tx: &Transaction<'_>,
    observation: &JobObservation,
    readers: &Readers,
    group: usize,
) -> Result<Result<Observed>> {
    let row = match &observation.target {
        JobTarget::Key(key) => {
            let column = key_column(JobId::is_id(key), "uid");
            let row = query_opt(
                tx,
                &format!("SELECT {JOB_COLUMNS} FROM job WHERE {column} = $1 FOR UPDATE"),
                &[key],
            )
            .await
            .map_err(storage)?;
            let Some(row) = row else {
                return Ok(Err(Error::NotFound("job")));
            };
            Some(row)
        }
        // The batch holds the match key's lock (`JobWrite::store`).
        JobTarget::Match(key) => query_opt(
            tx,
            &format!("SELECT {JOB_COLUMNS} FROM job WHERE match_key = $1 FOR UPDATE"),
            &[key],
        )
        .await
        .map_err(storage)?,
    };
    let observed = match row {
        Some(row) => {
            let found = read(&row, due_poll)?;
            readers.note(found.job.id.as_str(), group)?;
            let job = apply(
                tx,
                found.job,
                &observation.observation,
                observation.poller.as_deref(),
                observation.payload_retention,
            )
            .await?;
            Observed::Applied(Box::new(job))
        }
        None => {
            let JobTarget::Match(key) = &observation.target else {
                unreachable!("a key that finds nothing is an error above")
            };
            let text = serde_json::to_string(&observation.observation).map_err(Error::storage)?;
            execute(
                tx,
                "INSERT INTO job_unmatched (match_key, observation, received_at)
                 VALUES ($1, $2, $3)",
                &[key, &text, &ms(observation.observation.at)],
            )
            .await
            .map_err(storage)?;
            Observed::Kept
        }
    };
    Ok(Ok(observed))
}

#[async_trait]
impl JobStore for PostgresStore {
    async fn create_job(&self, new: NewJob) -> Result<Job> {
        match self
            .job_writes()
            .submit(JobWrite::Create(Box::new(new)))
            .await?
        {
            JobWritten::Created(job) => Ok(*job),
            JobWritten::Observed(_) => unreachable!("a registration answers its job"),
        }
    }

    async fn get_job(&self, key: &str) -> Result<Job> {
        let db = self.client().await?;
        let column = key_column(JobId::is_id(key), "uid");
        let row = query_opt(
            &db,
            &format!("SELECT {JOB_COLUMNS} FROM job WHERE {column} = $1"),
            &[&key],
        )
        .await
        .map_err(storage)?;
        match row {
            Some(row) => read(&row, due_poll).map(|due| due.job),
            None => Err(Error::NotFound("job")),
        }
    }

    async fn list_jobs(&self, filter: &JobFilter, query: &ListQuery) -> Result<Page<Job>> {
        let db = self.client().await?;
        let mut select = Select::new(format!("SELECT {JOB_COLUMNS}, id FROM job WHERE TRUE"));
        if let Some(app) = &filter.app_id {
            select = select.and("app_id = ?", app.as_str().to_owned());
        }
        if let Some(provider) = filter.provider {
            select = select.and("provider = ?", provider.as_str().to_owned());
        }
        if let Some(status) = filter.status {
            select = select.and("status = ?", status.code());
        }
        if let Some(group) = &filter.group {
            select = select.and("grp = ?", group.clone());
        }
        if let Some(after) = filter.created_after {
            select = select.and("id >= ?", JobId::boundary(after).into_string());
        }
        if let Some(before) = filter.created_before {
            select = select.and("id < ?", JobId::boundary(before).into_string());
        }
        select
            .page(
                &db,
                "id",
                query,
                |columns| due_poll(columns).map(|due| due.job),
                |job| job.id.to_string(),
            )
            .await
    }

    async fn observe_job(&self, observation: JobObservation) -> Result<Observed> {
        match self
            .job_writes()
            .submit(JobWrite::Observe(Box::new(observation)))
            .await?
        {
            JobWritten::Observed(observed) => Ok(observed),
            JobWritten::Created(_) => unreachable!("an observation answers what it did"),
        }
    }

    async fn claim_polls(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
        providers: &[Provider],
    ) -> Result<Vec<DuePoll>> {
        let providers: Vec<&str> = providers.iter().map(|p| p.as_str()).collect();
        let until = ms(now + chrono::Duration::from_std(lease).map_err(Error::storage)?);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX).min(CLAIM_MOST);
        let db = self.client().await?;
        // Each provider's due polls are read from its own stretch of `job_provider_poll_due`
        // (a `LATERAL` per provider), oldest first, and the oldest of them all are leased:
        // a filter on the provider over the due polls of every provider would read them
        // all whenever this group has few (100,000 jobs due elsewhere: 40 ms a claim).
        // Each provider's subquery locks up to `limit` rows, of which the oldest `limit` in
        // all are leased; the others are unlocked when the statement ends (a claim of the
        // same group on another node meanwhile passes over them and takes younger polls).
        // The claimed rows are joined by key, and the literal `LIMIT` bounds the planner's
        // guess of how many: the generic plan cannot know `$4`, and a guess of thousands
        // makes the join a scan of the whole table.
        let rows = query_rows(
            &db,
            &format!(
                "UPDATE job SET lease_owner = $1, lease_until = $2, poll_asked_at = NULL
                 FROM (SELECT * FROM (
                     SELECT due.id FROM unnest($5::text[]) AS wanted (provider)
                     CROSS JOIN LATERAL (
                         SELECT id, poll_due_at FROM job
                         WHERE job.provider = wanted.provider AND poll_due_at <= $3
                             AND (lease_until IS NULL OR lease_until <= $3)
                         ORDER BY poll_due_at LIMIT $4
                         FOR UPDATE SKIP LOCKED) AS due
                     ORDER BY due.poll_due_at LIMIT $4) AS oldest
                     LIMIT {CLAIM_MOST}) AS due
                 WHERE job.id = due.id
                 RETURNING {JOB_COLUMNS}"
            ),
            &[&owner, &until, &ms(now), &limit, &providers],
        )
        .await
        .map_err(storage)?;
        rows_to_polls(&rows)
    }

    async fn delay_poll(
        &self,
        job: &JobId,
        owner: &str,
        due: DateTime<Utc>,
        failed: bool,
    ) -> Result<()> {
        let db = self.client().await?;
        let rows = execute(
            &db,
            "UPDATE job SET
                 poll_due_at = CASE WHEN poll_due_at IS NULL THEN NULL
                     ELSE LEAST($3::timestamptz, poll_asked_at) END,
                 poll_asked_at = NULL,
                 failures = CASE WHEN $4 THEN failures + 1 ELSE 0 END,
                 polls = polls + 1,
                 lease_owner = NULL, lease_until = NULL
             WHERE id = $1 AND lease_owner = $2",
            &[&job.as_str(), &owner, &ms(due), &failed],
        )
        .await
        .map_err(storage)?;
        changed(rows, "job lease")
    }

    async fn release_polls(&self, owner: &str) -> Result<u64> {
        let db = self.client().await?;
        execute(
            &db,
            "UPDATE job SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1",
            &[&owner],
        )
        .await
        .map_err(storage)
    }

    async fn purge_unmatched(&self, before: DateTime<Utc>) -> Result<u64> {
        self.purge("job_unmatched", "id", "received_at", before)
            .await
    }

    async fn open_jobs(&self) -> Result<u64> {
        let db = self.client().await?;
        let row = query_opt(
            &db,
            "SELECT COUNT(*) FROM job WHERE poll_due_at IS NOT NULL",
            &[],
        )
        .await
        .map_err(storage)?;
        Ok(row.map_or(0, |row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)))
    }
}

/// A write of the job tracker's that group commits gather: a registration or an
/// observation (a poll's answer, a webhook). Each took a transaction and a WAL flush of its
/// own, so registrations and polls went at the pace of PostgreSQL's commits where SQLite's
/// writer gathers them. In a batch, the writes about one job run one after the other, each
/// as it would in a transaction of its own; those about different jobs run side by side,
/// their statements pipelined on the batch's connection.
#[derive(Debug)]
pub(crate) enum JobWrite {
    Create(Box<NewJob>),
    Observe(Box<JobObservation>),
}

/// What a [`JobWrite`] answers.
#[derive(Debug)]
pub(crate) enum JobWritten {
    Created(Box<Job>),
    Observed(Observed),
}

impl JobWrite {
    /// What it names its job by: a registration by its match key (or, without one, by
    /// its new id), an observation by its target.
    fn key(&self) -> Cow<'_, str> {
        match self {
            JobWrite::Create(new) => {
                match_key(&new.job).map_or(Cow::Borrowed(new.job.id.as_str()), Cow::Owned)
            }
            JobWrite::Observe(observation) => match &observation.target {
                JobTarget::Key(key) | JobTarget::Match(key) => Cow::Borrowed(key),
            },
        }
    }

    /// The id of the job an observation by uid or by match key finds, if any.
    async fn find(&self, tx: &Transaction<'_>) -> Result<Option<String>> {
        let (column, key) = match self {
            JobWrite::Observe(observation) => match &observation.target {
                JobTarget::Key(key) if !JobId::is_id(key) => ("uid", key),
                JobTarget::Match(key) => ("match_key", key),
                JobTarget::Key(_) => return Ok(None),
            },
            JobWrite::Create(_) => return Ok(None),
        };
        let row = query_opt(
            tx,
            &format!("SELECT id FROM job WHERE {column} = $1"),
            &[key],
        )
        .await
        .map_err(storage)?;
        Ok(row.map(|row| row.get(0)))
    }

    /// The match key it locks: a registration's, or the one an observation names its job
    /// by.
    fn match_key(&self) -> Option<Cow<'_, str>> {
        match self {
            JobWrite::Create(new) => match_key(&new.job).map(Cow::Owned),
            JobWrite::Observe(observation) => match &observation.target {
                JobTarget::Match(key) => Some(Cow::Borrowed(key)),
                JobTarget::Key(_) => None,
            },
        }
    }

    /// Carries it out in `tx` as a write of `group` of its batch: its answer, or the error
    /// of a statement.
    async fn run(
        &self,
        tx: &Transaction<'_>,
        readers: &Readers,
        group: usize,
    ) -> Result<Result<JobWritten>> {
        Ok(match self {
            JobWrite::Create(new) => create(tx, new)
                .await?
                .map(|job| JobWritten::Created(Box::new(job))),
            JobWrite::Observe(observation) => observe(tx, observation, readers, group)
                .await?
                .map(JobWritten::Observed),
        })
    }
}

// The batch keeps its order of arrival (no `lock_order`): `store` takes its locks in
// order itself, before any write runs.
impl Grouped for JobWrite {
    type Stored = JobWritten;

    async fn store<'a>(
        tx: &'a Transaction<'a>,
        batch: &'a [&'a Self],
    ) -> Result<Stored<JobWritten>> {
        // The match keys first, in order: a registration and a webhook of one key, in this
        // batch or another transaction, take turns, and what the lookups below find by
        // them stays true until this batch commits.
        let mut match_keys: Vec<Cow<'_, str>> =
            batch.iter().filter_map(|write| write.match_key()).collect();
        match_keys.sort_unstable();
        match_keys.dedup();
        if !match_keys.is_empty() {
            let keys: Vec<&str> = match_keys.iter().map(AsRef::as_ref).collect();
            lock_keys(tx, &keys).await?;
        }
        // The job each write is about: the one an observation finds by its uid or match
        // key (looked up for all of them at once), else the job its key names. A job
        // registered in this batch is named by its match key, which an observation that
        // finds no job shares, and by its uid.
        let found = try_join_all(batch.iter().map(|write| write.find(tx))).await?;
        let registered: HashMap<&str, Cow<'_, str>> = batch
            .iter()
            .filter_map(|write| match write {
                JobWrite::Create(new) => Some((new.job.uid.as_deref()?, write.key())),
                JobWrite::Observe(_) => None,
            })
            .collect();
        let mut by_job: BTreeMap<Cow<'_, str>, Vec<usize>> = BTreeMap::new();
        for (at, (write, found)) in batch.iter().zip(found).enumerate() {
            let key = write.key();
            let job = match found {
                Some(id) => Cow::Owned(id),
                None => registered.get(key.as_ref()).cloned().unwrap_or(key),
            };
            by_job.entry(job).or_default().push(at);
        }
        // Then the jobs' rows, in the order of their ids, and last the locks of the groups
        // that the batch's writes may end (a registration in a group, an observation that
        // ends a job in one), in order: the order a write of its own takes them in (its
        // row, then its group). Two batches that share jobs or groups wait for each other
        // instead of each holding a lock the other wants. (A key that is not an id locks
        // no row.)
        let mut groups: Vec<String> = batch
            .iter()
            .filter_map(|write| match write {
                JobWrite::Create(new) => Some(group_lock(
                    new.job.app_id.as_str(),
                    new.job.group.as_deref()?,
                )),
                JobWrite::Observe(_) => None,
            })
            .collect();
        if batch
            .iter()
            .any(|write| matches!(write, JobWrite::Observe(_)))
        {
            let ids: Vec<&str> = by_job.keys().map(AsRef::as_ref).collect();
            let rows = query_rows(
                tx,
                "SELECT id, app_id, grp FROM job WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
                &[&ids],
            )
            .await
            .map_err(storage)?;
            for row in &rows {
                let (id, app, group): (&str, &str, Option<&str>) =
                    (row.get(0), row.get(1), row.get(2));
                let ends = |at: &usize| match batch[*at] {
                    JobWrite::Observe(observation) => observation
                        .observation
                        .status
                        .is_some_and(JobStatus::is_terminal),
                    JobWrite::Create(_) => false,
                };
                if let Some(group) = group
                    && by_job.get(id).is_some_and(|writes| writes.iter().any(ends))
                {
                    groups.push(group_lock(app, group));
                }
            }
        }
        if !groups.is_empty() {
            groups.sort_unstable();
            groups.dedup();
            let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
            lock_keys(tx, &groups).await?;
        }
        // The writes of each job one after the other, in the batch's order; those of
        // different jobs side by side. Should two of them find one job by different
        // names after all (one registered meanwhile by uid), the batch fails and its
        // writes are carried out one per transaction.
        let readers = Readers::default();
        let readers = &readers;
        let runs = try_join_all(by_job.into_values().enumerate().map(
            |(group, writes)| async move {
                let mut answers = Vec::with_capacity(writes.len());
                for at in writes {
                    answers.push((at, batch[at].run(tx, readers, group).await?));
                }
                Ok::<_, Error>(answers)
            },
        ))
        .await?;
        let mut answers: Vec<(usize, Result<JobWritten>)> = runs.into_iter().flatten().collect();
        answers.sort_by_key(|(at, _)| *at);
        // The events' deliveries are not announced to other nodes: see `emit`.
        Ok(Stored {
            answers: answers.into_iter().map(|(_, answer)| answer).collect(),
            queued: false,
        })
    }
}

/// The group of its batch that read each job: two groups that both read a job before
/// either wrote it back would lose one's change.
#[derive(Debug, Default)]
struct Readers(std::sync::Mutex<HashMap<String, usize>>);

impl Readers {
    /// Notes that `group` read `job`; an error if another group of the batch did.
    fn note(&self, job: &str, group: usize) -> Result<()> {
        let mut readers = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match readers.entry(job.to_owned()) {
            Entry::Vacant(entry) => {
                entry.insert(group);
                Ok(())
            }
            Entry::Occupied(entry) if *entry.get() == group => Ok(()),
            Entry::Occupied(_) => Err(Error::storage(std::io::Error::other(
                "two writes of one group commit found one job by different names",
            ))),
        }
    }
}
