//! Long-running AI jobs, their polls and the webhooks kept for them: `impl JobStore`.
//!
//! Every change runs on the writer thread, so reading a job, applying an observation
//! ([`Job::observe`]) and writing it back cannot interleave with another change.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hookline_core::id::JobId;
use hookline_core::job::{
    GroupCounts, Job, JobStatus, NextPoll, Observation, Provider, group_completed,
};
use hookline_core::page::{ListQuery, Page};
use hookline_core::store::{
    DuePoll, JobFilter, JobObservation, JobStore, JobTarget, NewJob, NewMessage, Observed,
};
use hookline_core::{Error, Result};
use rusqlite::{Connection, Row, params};

use super::idempotency::claim_idempotent;
use super::messages::insert_message;
use super::{Select, all, changed, key_column, not_found, one};
use crate::SqliteStore;
use crate::rows::{classify, json, millis};

const JOB_COLUMNS: &str = "body, polls, failures";

fn job_row(row: &Row<'_>) -> rusqlite::Result<DuePoll> {
    let body: String = row.get(0)?;
    let job = serde_json::from_str(&body).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(DuePoll {
        job,
        polls: row.get(1)?,
        failures: row.get(2)?,
    })
}

fn load(conn: &Connection, key: &str) -> Result<Option<DuePoll>> {
    let column = key_column(JobId::is_id(key), "uid");
    one(
        conn,
        &format!("SELECT {JOB_COLUMNS} FROM job WHERE {column} = ?1"),
        [key],
        job_row,
    )
}

/// Writes a job's state after a change; `poll_due` is the new due time (`None` once
/// ended), `poller` the poller whose lease ends.
fn save(
    conn: &Connection,
    job: &Job,
    poll_due: Option<Option<DateTime<Utc>>>,
    poller: Option<&str>,
) -> Result<()> {
    // A poll asked for while one is in flight (a thin webhook's) is kept in
    // `poll_asked_at`, so that the poll's own next time cannot put it off.
    let sql = "UPDATE job SET status = ?2, body = ?3, updated_at = ?4,
             poll_due_at = CASE WHEN NOT ?5 THEN poll_due_at
                 WHEN ?7 IS NULL OR ?6 IS NULL THEN ?6
                 ELSE MIN(?6, COALESCE(poll_asked_at, ?6)) END,
             poll_asked_at = CASE WHEN ?7 IS NOT NULL AND lease_owner = ?7 THEN NULL
                 WHEN ?5 AND lease_owner IS NOT NULL THEN MIN(?6, COALESCE(poll_asked_at, ?6))
                 ELSE poll_asked_at END,
             polls = CASE WHEN ?7 IS NULL THEN polls ELSE polls + 1 END,
             failures = CASE WHEN ?7 IS NULL AND NOT (?5 AND ?6 IS NOT NULL) THEN failures
                 ELSE 0 END,
             lease_until = CASE WHEN lease_owner = ?7 THEN NULL ELSE lease_until END,
             lease_owner = CASE WHEN lease_owner = ?7 THEN NULL ELSE lease_owner END
         WHERE id = ?1";
    conn.prepare_cached(sql)
        .and_then(|mut s| {
            s.execute(params![
                job.id.as_str(),
                job.status.code(),
                json(job),
                millis(job.updated_at),
                poll_due.is_some(),
                poll_due.flatten().map(millis),
                poller,
            ])
        })
        .map_err(Error::storage)?;
    Ok(())
}

/// Creates an event's message unless one with its `eventId` exists: a job's events are
/// made once, whoever observes what.
fn emit(conn: &Connection, new: &NewMessage) -> Result<()> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM message WHERE app_id = ?1 AND event_id = ?2")
        .and_then(|mut s| s.exists(params![new.message.app_id.as_str(), new.message.event_id]))
        .map_err(Error::storage)?;
    if !exists {
        insert_message(conn, new)?;
    }
    Ok(())
}

/// Applies `observation` to `job` and writes what follows: the job, its next poll, the
/// messages of its events and, if it ended the last open job of its group, the group's.
fn apply(
    conn: &Connection,
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
    save(conn, &job, poll_due, poller)?;
    for event in events {
        emit(conn, &job.event_message(event, at, retention))?;
    }
    if was_open
        && job.status.is_terminal()
        && let Some(group) = &job.group
        && let Some(counts) = group_counts(conn, &job, group)?
    {
        let message = group_completed(&job.app_id, group, &counts, at, retention);
        emit(conn, &message)?;
    }
    Ok(job)
}

/// How the jobs of `job`'s group ended, if all of them have.
fn group_counts(conn: &Connection, job: &Job, group: &str) -> Result<Option<GroupCounts>> {
    let rows = all(
        conn,
        "SELECT status, COUNT(*) FROM job WHERE app_id = ?1 AND grp = ?2 GROUP BY status",
        params![job.app_id.as_str(), group],
        |row| Ok((row.get::<_, i16>(0)?, row.get::<_, u64>(1)?)),
    )?;
    let mut counts = GroupCounts::default();
    for (code, count) in rows {
        let status = JobStatus::from_code(code).ok_or_else(|| {
            Error::storage(std::io::Error::other(format!(
                "unknown job status code {code}"
            )))
        })?;
        if !status.is_terminal() {
            return Ok(None);
        }
        counts.0.insert(status.as_str().to_owned(), count);
    }
    Ok(Some(counts))
}

/// The webhooks kept for `match_key` since `since`, oldest first, taken out of the table.
fn take_unmatched(
    conn: &Connection,
    match_key: &str,
    since: DateTime<Utc>,
) -> Result<Vec<Observation>> {
    let kept = all(
        conn,
        "DELETE FROM job_unmatched WHERE match_key = ?1 RETURNING id, observation, received_at",
        [match_key],
        |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
            ))
        },
    )?;
    let mut kept: Vec<_> = kept
        .into_iter()
        .filter(|(_, _, received)| *received >= millis(since))
        .collect();
    kept.sort_by_key(|(id, _, _)| *id);
    kept.into_iter()
        .map(|(_, text, _)| serde_json::from_str(&text).map_err(Error::storage))
        .collect()
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn create_job(&self, new: NewJob) -> Result<Job> {
        self.write(move |conn| {
            let job = &new.job;
            let match_key = job
                .provider_job_id
                .as_deref()
                .and_then(|id| job.provider.match_key(id));
            if let Some(key) = &match_key {
                let taken = conn
                    .prepare_cached("SELECT 1 FROM job WHERE match_key = ?1")
                    .and_then(|mut s| s.exists([key]))
                    .map_err(Error::storage)?;
                if taken {
                    return Err(Error::conflict(
                        "a job with this provider and providerJobId already exists",
                    ));
                }
            }
            conn.prepare_cached(
                "INSERT INTO job (id, uid, app_id, provider, match_key, grp, status, body,
                     poll_due_at, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    job.id.as_str(),
                    job.uid,
                    job.app_id.as_str(),
                    job.provider.as_str(),
                    match_key,
                    job.group,
                    job.status.code(),
                    json(job),
                    job.poll_due(new.poll_due).map(millis),
                    millis(job.created_at),
                ])
            })
            .map_err(|e| classify(e, "a job"))?;
            emit(conn, &new.created_message)?;
            let mut job = new.job.clone();
            if let Some(answer) = &new.submitted {
                job = apply(conn, job, answer, None, new.payload_retention)?;
            }
            if let Some(key) = &match_key {
                for observation in take_unmatched(conn, key, new.unmatched_since)? {
                    job = apply(conn, job, &observation, None, new.payload_retention)?;
                }
            }
            if let Some(record) = &new.idempotency {
                let mut record = record.clone();
                record.response.body = serde_json::to_vec(&job).map_err(Error::storage)?;
                claim_idempotent(conn, &record, job.created_at, new.replaces_pending)?;
            }
            Ok(job)
        })
        .await
    }

    async fn get_job(&self, key: &str) -> Result<Job> {
        let key = key.to_owned();
        self.lookup(move |conn| load(conn, &key))
            .await
            .and_then(not_found("job"))
            .map(|due| due.job)
    }

    async fn list_jobs(&self, filter: &JobFilter, query: &ListQuery) -> Result<Page<Job>> {
        let (filter, query) = (filter.clone(), query.clone());
        self.lookup(move |conn| {
            let mut select = Select::new(format!("SELECT {JOB_COLUMNS}, id FROM job WHERE 1 = 1"));
            if let Some(app) = &filter.app_id {
                select = select.and("app_id = ?", app.as_str().to_owned());
            }
            if let Some(provider) = filter.provider {
                select = select.and("provider = ?", provider.as_str().to_owned());
            }
            if let Some(status) = filter.status {
                select = select.and("status = ?", i64::from(status.code()));
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
            select.page(
                conn,
                "id",
                &query,
                |row| job_row(row).map(|due| due.job),
                |job| job.id.to_string(),
            )
        })
        .await
    }

    async fn observe_job(&self, observation: JobObservation) -> Result<Observed> {
        self.write(move |conn| {
            let found = match &observation.target {
                JobTarget::Key(key) => Some(load(conn, key)?.ok_or(Error::NotFound("job"))?),
                JobTarget::Match(key) => one(
                    conn,
                    &format!("SELECT {JOB_COLUMNS} FROM job WHERE match_key = ?1"),
                    [key],
                    job_row,
                )?,
            };
            let Some(found) = found else {
                let JobTarget::Match(key) = &observation.target else {
                    unreachable!("a key that finds nothing is an error above")
                };
                conn.prepare_cached(
                    "INSERT INTO job_unmatched (match_key, observation, received_at)
                     VALUES (?1, ?2, ?3)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        key,
                        json(&observation.observation),
                        millis(observation.observation.at)
                    ])
                })
                .map_err(Error::storage)?;
                return Ok(Observed::Kept);
            };
            apply(
                conn,
                found.job,
                &observation.observation,
                observation.poller.as_deref(),
                observation.payload_retention,
            )
            .map(|job| Observed::Applied(Box::new(job)))
        })
        .await
    }

    async fn claim_polls(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
        providers: &[Provider],
    ) -> Result<Vec<DuePoll>> {
        let owner = owner.to_owned();
        let providers = providers.to_vec();
        let until = now + chrono::Duration::from_std(lease).map_err(Error::storage)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(move |conn| {
            // Each provider's due polls are read from its own stretch of
            // `job_provider_poll_due`, oldest first, and the oldest of them all are leased:
            // a filter on the provider over the due polls of every provider would read them
            // all whenever this group has few (100,000 jobs due elsewhere: 50 ms a claim,
            // holding the writer).
            let mut due: Vec<(i64, String)> = Vec::new();
            for provider in &providers {
                due.extend(all(
                    conn,
                    "SELECT poll_due_at, id FROM job
                     WHERE provider = ?1 AND poll_due_at <= ?2
                         AND (lease_until IS NULL OR lease_until <= ?2)
                     ORDER BY poll_due_at LIMIT ?3",
                    params![provider.as_str(), millis(now), limit],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?);
            }
            due.sort_unstable();
            due.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            let ids = serde_json::to_string(&due.iter().map(|(_, id)| id).collect::<Vec<_>>())
                .map_err(Error::storage)?;
            all(
                conn,
                &format!(
                    "UPDATE job SET lease_owner = ?1, lease_until = ?2, poll_asked_at = NULL
                     WHERE id IN (SELECT value FROM json_each(?3))
                     RETURNING {JOB_COLUMNS}"
                ),
                params![owner, millis(until), ids],
                job_row,
            )
        })
        .await
    }

    async fn delay_poll(
        &self,
        job: &JobId,
        owner: &str,
        due: DateTime<Utc>,
        failed: bool,
    ) -> Result<()> {
        let (job, owner) = (job.clone(), owner.to_owned());
        self.write(move |conn| {
            let rows = conn
                .prepare_cached(
                    "UPDATE job SET
                         poll_due_at = CASE WHEN poll_due_at IS NULL THEN NULL
                             ELSE MIN(?3, COALESCE(poll_asked_at, ?3)) END,
                         poll_asked_at = NULL,
                         failures = CASE WHEN ?4 THEN failures + 1 ELSE 0 END,
                         polls = polls + 1,
                         lease_owner = NULL, lease_until = NULL
                     WHERE id = ?1 AND lease_owner = ?2",
                )
                .and_then(|mut s| s.execute(params![job.as_str(), owner, millis(due), failed]))
                .map_err(Error::storage)?;
            changed(rows, "job lease")
        })
        .await
    }

    async fn release_polls(&self, owner: &str) -> Result<u64> {
        let owner = owner.to_owned();
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE job SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?1",
            )
            .and_then(|mut s| s.execute([owner]))
            .map(|rows| rows as u64)
            .map_err(Error::storage)
        })
        .await
    }

    async fn purge_unmatched(&self, before: DateTime<Utc>) -> Result<u64> {
        self.purge("job_unmatched", "received_at", before).await
    }

    async fn open_jobs(&self) -> Result<u64> {
        self.read(|conn| {
            one(
                conn,
                "SELECT COUNT(*) FROM job WHERE poll_due_at IS NOT NULL",
                [],
                |row| row.get::<_, u64>(0),
            )
            .map(Option::unwrap_or_default)
        })
        .await
    }
}
