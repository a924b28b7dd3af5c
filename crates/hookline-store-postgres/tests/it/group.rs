//! Group commits: a batch whose statements wait on a row lock does not hold up the writes
//! behind it; the job tracker's writes that arrive together share transactions, and one
//! that is refused fails alone.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hookline_core::Error;
use hookline_core::id::{AppId, MessageId};
use hookline_core::job::{Job, JobStatus, NextPoll, Observation, ObservedBy, Provider};
use hookline_core::store::{
    JobObservation, JobStore, JobTarget, MessageStore, Observed, ResourceStore,
};

use crate::claims::{app, message};
use crate::{open, raw, unique_schema, url};

/// A create of an event id that another transaction is inserting waits for that
/// transaction to end; a create after it commits meanwhile, in a batch of its own.
#[tokio::test]
async fn a_create_waiting_on_a_row_lock_does_not_hold_up_the_next() {
    let Some(url) = url() else { return };
    let schema = unique_schema();
    let store = open(&url, &schema).await;
    let a = app();
    store.create_app(&a).await.unwrap();
    let first = message(&a.id);
    let first_id = first.message.id.clone();
    store.create_message(first).await.unwrap();

    // Another transaction inserts a message with the event id `taken`, and stays open.
    let mut other = raw(&url, &schema).await;
    let inserting = other.transaction().await.unwrap();
    inserting
        .batch_execute(&format!(
            "INSERT INTO message (id, app_id, event_id, event_type, payload, headers, created_at)
             SELECT '{}', app_id, 'taken', event_type, payload, headers, created_at
             FROM message WHERE id = '{first_id}'",
            MessageId::new()
        ))
        .await
        .unwrap();

    let mut taken = message(&a.id);
    taken.message.event_id = Some("taken".into());
    let waiting = tokio::spawn({
        let store = store.clone();
        async move { store.create_message(taken).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a create of the event id waits for the transaction inserting it"
    );

    let next = tokio::time::timeout(Duration::from_secs(5), store.create_message(message(&a.id)))
        .await
        .expect("the next create is not held up by the waiting one");
    next.unwrap();
    assert!(!waiting.is_finished());

    inserting.commit().await.unwrap();
    let outcome = waiting.await.unwrap();
    assert!(
        matches!(outcome, Err(Error::Conflict { .. })),
        "the event id was taken: {outcome:?}"
    );
}

/// How many jobs the schema holds, and in how many transactions their rows were last
/// written (the distinct `xmin`s).
async fn job_transactions(url: &str, schema: &str) -> (i64, i64) {
    let row = raw(url, schema)
        .await
        .query_one("SELECT count(*), count(DISTINCT xmin::text) FROM job", &[])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The OpenAI batch `batch_{n}` of `app`, registered at `now`.
fn batch_job(app: &AppId, n: usize, now: DateTime<Utc>) -> Job {
    Job::new(
        Provider::OpenaiBatch,
        Some(format!("batch_{n}")),
        app.clone(),
        now,
        now + chrono::Duration::hours(1),
    )
}

/// A poll's answer about the job `target` names: `status`, as the provider said it.
fn polled(target: JobTarget, status: JobStatus, provider_status: &str) -> JobObservation {
    JobObservation {
        target,
        observation: Observation {
            at: crate::now(),
            source: ObservedBy::Poll,
            provider_status: Some(provider_status.into()),
            status: Some(status),
            progress: None,
            result: None,
            error: None,
            next_poll: NextPoll::Keep,
        },
        poller: None,
        payload_retention: None,
    }
}

/// Registrations sent together commit together; the second registration of a provider
/// job id is refused as a conflict, and the others of its transaction still commit. Then
/// a poll's answer for each job, sent together, commits together too; one for a job that
/// does not exist is answered `NotFound`, alone. Last, observations of one job sent
/// together (by its id, its uid and its match key) are all applied: none overwrites
/// another.
#[tokio::test]
async fn job_writes_sent_together_share_transactions_and_a_refused_one_fails_alone() {
    let Some(url) = url() else { return };
    let schema = unique_schema();
    let store = open(&url, &schema).await;
    let a = app();
    store.create_app(&a).await.unwrap();
    let now = crate::now();
    let jobs: Vec<Job> = (0..40).map(|n| batch_job(&a.id, n, now)).collect();
    let since = now - chrono::Duration::hours(1);
    let registrations: Vec<_> = jobs
        .iter()
        .cloned()
        .chain([batch_job(&a.id, 7, now)])
        .map(|job| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_job(job.registration(None, None, since, None))
                    .await
            })
        })
        .collect();
    let mut conflicts = 0;
    for registration in registrations {
        match registration.await.unwrap() {
            Ok(_) => {}
            Err(Error::Conflict { .. }) => conflicts += 1,
            Err(error) => panic!("unexpected error: {error}"),
        }
    }
    assert_eq!(conflicts, 1, "batch_7 registered twice");
    let (stored, transactions) = job_transactions(&url, &schema).await;
    assert_eq!(stored, 40);
    assert!(
        transactions < 40,
        "40 registrations sent together took {transactions} transactions"
    );

    let observations: Vec<_> = jobs
        .iter()
        .map(|job| job.id.to_string())
        .chain(["job_none".to_owned()])
        .map(|key| {
            let store = store.clone();
            let observation = polled(JobTarget::Key(key), JobStatus::Running, "in_progress");
            tokio::spawn(async move { store.observe_job(observation).await })
        })
        .collect();
    let mut answers = Vec::new();
    for observation in observations {
        answers.push(observation.await.unwrap());
    }
    let missing = answers.pop().expect("the unknown job's answer");
    assert!(
        matches!(missing, Err(Error::NotFound("job"))),
        "{missing:?}"
    );
    for answer in answers {
        let Observed::Applied(job) = answer.unwrap() else {
            panic!("a registered job's observation is applied");
        };
        assert_eq!(job.status, JobStatus::Running);
    }
    let (stored, transactions) = job_transactions(&url, &schema).await;
    assert_eq!(stored, 40);
    assert!(
        transactions < 40,
        "40 observations sent together took {transactions} transactions"
    );

    // Ten observations of one job, by its id, its uid and its match key, sent together;
    // a trigger notes the transaction of each write of the job's row.
    let first = &jobs[0];
    raw(&url, &schema)
        .await
        .batch_execute(&format!(
            "UPDATE job SET uid = 'nightly' WHERE id = '{}';
             CREATE TABLE job_writes (txid BIGINT NOT NULL);
             CREATE FUNCTION note_job_write() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN INSERT INTO job_writes VALUES (txid_current()); RETURN NEW; END $$;
             CREATE TRIGGER job_written AFTER UPDATE ON job
                 FOR EACH ROW EXECUTE FUNCTION note_job_write();",
            first.id
        ))
        .await
        .unwrap();
    let before = store
        .get_job(first.id.as_str())
        .await
        .unwrap()
        .timeline
        .len();
    let match_key = Provider::OpenaiBatch.match_key("batch_0").unwrap();
    let targets = [
        JobTarget::Key(first.id.to_string()),
        JobTarget::Key("nightly".into()),
        JobTarget::Match(match_key),
    ];
    let together: Vec<_> = (0..10)
        .map(|n| {
            let target = targets[n % targets.len()].clone();
            let observation = polled(target, JobStatus::Running, &format!("in_progress_{n}"));
            let store = store.clone();
            tokio::spawn(async move { store.observe_job(observation).await })
        })
        .collect();
    for observation in together {
        assert!(matches!(
            observation.await.unwrap(),
            Ok(Observed::Applied(_))
        ));
    }
    let after = store.get_job(first.id.as_str()).await.unwrap();
    assert_eq!(
        after.timeline.len(),
        before + 10,
        "every observation is on the timeline: {:?}",
        after.timeline
    );
    // In one group commit, not carried out again one per transaction.
    let (writes, transactions): (i64, i64) = {
        let row = raw(&url, &schema)
            .await
            .query_one("SELECT count(*), count(DISTINCT txid) FROM job_writes", &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(writes, 10);
    assert!(
        transactions < 10,
        "ten observations sent together took {transactions} transactions"
    );
}

/// The last two jobs of a group, ending in one group commit side by side, end their group
/// once: one `job_group.completed` message, both jobs succeeded, in one transaction.
#[tokio::test]
async fn a_group_ending_within_one_group_commit_ends_once() {
    let Some(url) = url() else { return };
    let schema = unique_schema();
    let store = open(&url, &schema).await;
    let a = app();
    store.create_app(&a).await.unwrap();
    let now = crate::now();
    let since = now - chrono::Duration::hours(1);
    let mut jobs = Vec::new();
    for n in 0..2 {
        let mut job = batch_job(&a.id, n, now);
        job.group = Some("nightly".into());
        jobs.push(
            store
                .create_job(job.registration(None, None, since, None))
                .await
                .unwrap(),
        );
    }
    let endings: Vec<_> = jobs
        .iter()
        .map(|job| {
            let store = store.clone();
            let target = JobTarget::Key(job.id.to_string());
            let observation = polled(target, JobStatus::Succeeded, "completed");
            tokio::spawn(async move { store.observe_job(observation).await })
        })
        .collect();
    for ending in endings {
        let Observed::Applied(job) = ending.await.unwrap().unwrap() else {
            panic!("a registered job's observation is applied");
        };
        assert_eq!(job.status, JobStatus::Succeeded);
    }
    let row = raw(&url, &schema)
        .await
        .query_one(
            "SELECT (SELECT count(*) FROM message WHERE event_type = 'job_group.completed'),
                 (SELECT count(DISTINCT xmin::text) FROM job)",
            &[],
        )
        .await
        .unwrap();
    let (completed, transactions): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(completed, 1);
    assert_eq!(transactions, 1, "both jobs ended in one group commit");
}
