//! Jobs: registration, observations (exactly one outcome), polls under leases, webhooks
//! kept for jobs not yet registered, groups.

use serde_json::json;

use super::*;
use crate::Code;
use crate::id::JobId;
use crate::job::{Job, JobStatus, NextPoll, Observation, ObservedBy, Provider};
use crate::store::{JobFilter, JobObservation, JobTarget, Observed};

fn job(app: &AppId, provider: Provider, provider_id: Option<&str>) -> Job {
    let now = clock_now();
    Job::new(
        provider,
        provider_id.map(str::to_owned),
        app.clone(),
        now,
        now + chrono::Duration::hours(24),
    )
}

fn seen(status: Option<JobStatus>, source: ObservedBy) -> Observation {
    Observation {
        at: clock_now(),
        source,
        provider_status: status.map(|s| s.as_str().to_owned()),
        status,
        progress: None,
        result: Some(json!({"status": status.map(JobStatus::as_str)})),
        error: None,
        next_poll: NextPoll::Keep,
    }
}

fn by_key(job: &Job, observation: Observation) -> JobObservation {
    JobObservation {
        target: JobTarget::Key(job.id.to_string()),
        observation,
        poller: None,
        payload_retention: None,
    }
}

/// The event types of the app's messages, oldest first.
async fn events(store: &dyn Store, app: &AppId) -> Vec<String> {
    let page = store
        .list_messages(app, &Default::default(), &first(250))
        .await
        .unwrap();
    let mut messages = page.data;
    messages.sort_by(|a, b| a.id.cmp(&b.id));
    messages.into_iter().map(|m| m.event_type).collect()
}

async fn registered(store: &dyn Store, job: Job) -> Job {
    let since = job.created_at - chrono::Duration::hours(1);
    store
        .create_job(job.registration(None, None, since, None))
        .await
        .unwrap()
}

pub async fn a_job_is_stored_with_its_created_event_and_found_by_id_or_uid(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let mut j = job(&a.id, Provider::OpenaiBatch, Some("batch_1"));
    j.uid = Some("nightly".into());
    j.group = Some("g".into());
    j.metadata
        .insert("note".into(), json!("holds a \0 NUL and ünïcode"));
    let stored = registered(&*store, j.clone()).await;
    assert_eq!(stored, j);
    assert_eq!(store.get_job(j.id.as_str()).await.unwrap(), j);
    assert_eq!(store.get_job("nightly").await.unwrap(), j);
    assert_eq!(events(&*store, &a.id).await, ["job.created"]);

    let mut same_provider_job = job(&a.id, Provider::OpenaiBatch, Some("batch_1"));
    same_provider_job.uid = Some("other".into());
    let error = store
        .create_job(same_provider_job.registration(None, None, clock_now(), None))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Conflict { .. }), "{error:?}");
    assert!(
        error.to_string().contains("provider and providerJobId"),
        "{error}"
    );
    let mut same_uid = job(&a.id, Provider::OpenaiBatch, Some("batch_2"));
    same_uid.uid = Some("nightly".into());
    let error = store
        .create_job(same_uid.registration(None, None, clock_now(), None))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Conflict { .. }), "{error:?}");
    assert!(matches!(
        store.get_job("job_missing").await.unwrap_err(),
        Error::NotFound(_)
    ));
    assert_eq!(
        events(&*store, &a.id).await,
        ["job.created"],
        "a refused job emits nothing"
    );
}

pub async fn the_first_terminal_observation_wins_even_when_they_race(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let j = registered(
        &*store,
        job(&a.id, Provider::ReplicatePrediction, Some("p1")),
    )
    .await;
    store
        .observe_job(by_key(&j, seen(Some(JobStatus::Running), ObservedBy::Poll)))
        .await
        .unwrap();
    let outcomes = [
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::Succeeded,
    ];
    let racing = outcomes.map(|status| {
        let store = Arc::clone(&store);
        let observation = by_key(&j, seen(Some(status), ObservedBy::Webhook));
        Box::pin(async move { store.observe_job(observation).await.unwrap() }) as Task<'_, _>
    });
    let results = join_all(racing.into_iter().collect()).await;
    assert_eq!(results.len(), 4);
    let ended = store.get_job(j.id.as_str()).await.unwrap();
    assert!(ended.status.is_terminal());
    assert_eq!(
        ended.timeline.len(),
        5,
        "every observation is on the timeline"
    );
    let events = events(&*store, &a.id).await;
    let outcome_events: Vec<&String> = events
        .iter()
        .filter(|e| !matches!(e.as_str(), "job.created" | "job.running"))
        .collect();
    assert_eq!(outcome_events.len(), 1, "exactly one outcome: {events:?}");
    assert_eq!(*outcome_events[0], format!("job.{}", ended.status));
    assert_eq!(events.iter().filter(|e| *e == "job.running").count(), 1);
}

pub async fn a_webhook_before_its_job_is_kept_and_applied_at_registration(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let key = Provider::ReplicatePrediction.match_key("early").unwrap();
    let early = JobObservation {
        target: JobTarget::Match(key.clone()),
        observation: seen(Some(JobStatus::Succeeded), ObservedBy::Webhook),
        poller: None,
        payload_retention: None,
    };
    assert_eq!(
        store.observe_job(early.clone()).await.unwrap(),
        Observed::Kept
    );
    // A kept webhook older than the window is not applied.
    let mut stale = early.clone();
    stale.target = JobTarget::Match(Provider::ReplicatePrediction.match_key("stale").unwrap());
    stale.observation.at = clock_now() - chrono::Duration::hours(48);
    assert_eq!(store.observe_job(stale).await.unwrap(), Observed::Kept);

    let j = registered(
        &*store,
        job(&a.id, Provider::ReplicatePrediction, Some("early")),
    )
    .await;
    assert_eq!(
        j.status,
        JobStatus::Succeeded,
        "the kept webhook was applied"
    );
    assert_eq!(store.get_job(j.id.as_str()).await.unwrap(), j);
    let mut emitted = events(&*store, &a.id).await;
    emitted.sort();
    assert_eq!(emitted, ["job.created", "job.succeeded"]);
    let applied = store.observe_job(early).await.unwrap();
    let Observed::Applied(again) = applied else {
        panic!("the job exists now: {applied:?}")
    };
    assert_eq!(again.timeline.len(), 2);
    assert_eq!(
        events(&*store, &a.id).await.len(),
        2,
        "a duplicate emits nothing"
    );

    let stale_job = registered(
        &*store,
        job(&a.id, Provider::ReplicatePrediction, Some("stale")),
    )
    .await;
    assert_eq!(stale_job.status, JobStatus::Queued);
    assert_eq!(
        store.purge_unmatched(clock_now()).await.unwrap(),
        0,
        "both taken"
    );
}

pub async fn polls_are_claimed_under_a_lease_and_end_with_the_job(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let mut polled = job(&a.id, Provider::AnthropicMessageBatch, Some("msgbatch_1"));
    polled.poll.as_mut().unwrap().after = Duration::ZERO;
    let polled = registered(&*store, polled).await;
    let mut later = job(&a.id, Provider::OpenaiBatch, Some("batch_later"));
    later.poll.as_mut().unwrap().after = Duration::from_secs(3600);
    registered(&*store, later).await;

    let now = clock_now() + chrono::Duration::seconds(1);
    let lease = Duration::from_secs(30);
    let others = [Provider::OpenaiBatch, Provider::Custom];
    let claimed = store
        .claim_polls("node-a", now, lease, 10, &others)
        .await
        .unwrap();
    assert!(claimed.is_empty(), "only the providers asked for");
    let claimed = store
        .claim_polls("node-a", now, lease, 10, &Provider::ALL)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "only the due job");
    assert_eq!(claimed[0].job.id, polled.id);
    assert_eq!((claimed[0].polls, claimed[0].failures), (0, 0));
    assert!(
        store
            .claim_polls("node-b", now, lease, 10, &Provider::ALL)
            .await
            .unwrap()
            .is_empty()
    );

    // A failed poll moves it and counts the failure; the lease ends.
    store
        .delay_poll(&polled.id, "node-a", now, true)
        .await
        .unwrap();
    assert!(
        store
            .delay_poll(&polled.id, "node-a", now, true)
            .await
            .is_err(),
        "the lease ended"
    );
    let again = store
        .claim_polls("node-b", now, lease, 10, &Provider::ALL)
        .await
        .unwrap();
    assert_eq!((again[0].polls, again[0].failures), (1, 1));
    // An expired lease is taken over.
    let after_lease = now + chrono::Duration::seconds(31);
    let taken = store
        .claim_polls("node-c", after_lease, lease, 10, &Provider::ALL)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);

    // The poller's observation ends its lease and schedules the next poll.
    let mut observation = seen(Some(JobStatus::Running), ObservedBy::Poll);
    observation.next_poll = NextPoll::At(after_lease + chrono::Duration::seconds(15));
    let mut by_poller = by_key(&polled, observation);
    by_poller.poller = Some("node-c".into());
    store.observe_job(by_poller).await.unwrap();
    assert!(
        store
            .claim_polls("node-d", after_lease, lease, 10, &Provider::ALL)
            .await
            .unwrap()
            .is_empty()
    );
    let next = after_lease + chrono::Duration::seconds(15);
    let due = store
        .claim_polls("node-d", next, lease, 10, &Provider::ALL)
        .await
        .unwrap();
    assert_eq!((due[0].polls, due[0].failures), (2, 0));

    // A poll asked for while one is in flight (a thin webhook's) is not put off by the
    // in-flight poll's own next time, whether that poll records an answer or is moved on.
    let secs = chrono::Duration::seconds;
    let mut asked = seen(None, ObservedBy::Webhook);
    asked.next_poll = NextPoll::At(next);
    store
        .observe_job(by_key(&polled, asked.clone()))
        .await
        .unwrap();
    let mut answered = seen(Some(JobStatus::Running), ObservedBy::Poll);
    answered.next_poll = NextPoll::At(next + secs(3600));
    let mut by_poller = by_key(&polled, answered);
    by_poller.poller = Some("node-d".into());
    store.observe_job(by_poller).await.unwrap();
    let due = store
        .claim_polls("node-f", next + secs(1), lease, 10, &Provider::ALL)
        .await
        .unwrap();
    assert_eq!(due.len(), 1, "the asked-for poll is due");
    assert_eq!(due[0].job.id, polled.id);
    store.observe_job(by_key(&polled, asked)).await.unwrap();
    store
        .delay_poll(&polled.id, "node-f", next + secs(3600), true)
        .await
        .unwrap();
    let due = store
        .claim_polls("node-g", next + secs(2), lease, 10, &Provider::ALL)
        .await
        .unwrap();
    assert_eq!(due.len(), 1, "the asked-for poll outlived a failed one");
    // Asked for nothing, a poll's next time holds.
    store
        .delay_poll(&polled.id, "node-g", next + secs(3600), false)
        .await
        .unwrap();
    assert!(
        store
            .claim_polls("node-h", next + secs(3), lease, 10, &Provider::ALL)
            .await
            .unwrap()
            .is_empty()
    );

    // Once it ended, it is never due again.
    store
        .observe_job(by_key(
            &polled,
            seen(Some(JobStatus::Succeeded), ObservedBy::Webhook),
        ))
        .await
        .unwrap();
    let far = next + chrono::Duration::days(30);
    let due = store
        .claim_polls("node-e", far, lease, 10, &Provider::ALL)
        .await
        .unwrap();
    assert_eq!(due.len(), 1, "only the other job, at its deadline");
    assert_ne!(due[0].job.id, polled.id);
}

pub async fn a_claim_takes_the_oldest_due_polls_of_its_providers_up_to_its_limit(
    store: Arc<dyn Store>,
) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    // Due 1 s to 6 s after registration, over three providers of two families.
    let plan = [
        (Provider::OpenaiBatch, 1),
        (Provider::ReplicatePrediction, 2),
        (Provider::OpenaiResponse, 3),
        (Provider::OpenaiBatch, 4),
        (Provider::ReplicatePrediction, 5),
        (Provider::OpenaiResponse, 6),
    ];
    let mut ids = Vec::new();
    for (n, (provider, after)) in plan.into_iter().enumerate() {
        let mut j = job(&a.id, provider, Some(&format!("claimed_{n}")));
        j.poll.as_mut().unwrap().after = Duration::from_secs(after);
        ids.push(registered(&*store, j).await.id);
    }
    let now = clock_now() + chrono::Duration::seconds(30);
    let lease = Duration::from_secs(30);
    let claimed_ids = |claimed: Vec<crate::store::DuePoll>| {
        let mut claimed: Vec<JobId> = claimed.into_iter().map(|due| due.job.id).collect();
        claimed.sort();
        claimed
    };
    let sorted = |mut wanted: Vec<JobId>| {
        wanted.sort();
        wanted
    };
    let openai = [Provider::OpenaiBatch, Provider::OpenaiResponse];
    let first = store
        .claim_polls("node-a", now, lease, 3, &openai)
        .await
        .unwrap();
    assert_eq!(
        claimed_ids(first),
        sorted(vec![ids[0].clone(), ids[2].clone(), ids[3].clone()]),
        "the three oldest of both providers, none of the other family's"
    );
    let rest = store
        .claim_polls("node-b", now, lease, 10, &openai)
        .await
        .unwrap();
    assert_eq!(
        claimed_ids(rest),
        vec![ids[5].clone()],
        "only the one not leased"
    );
    let replicate = store
        .claim_polls("node-b", now, lease, 1, &[Provider::ReplicatePrediction])
        .await
        .unwrap();
    assert_eq!(
        claimed_ids(replicate),
        vec![ids[1].clone()],
        "the oldest one"
    );
    assert!(
        store
            .claim_polls("node-c", now, lease, 10, &[Provider::GeminiBatch])
            .await
            .unwrap()
            .is_empty(),
        "a provider with no jobs claims nothing"
    );
}

pub async fn a_group_completes_once_with_counts(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let mut members = Vec::new();
    for _ in 0..6 {
        let mut j = job(&a.id, Provider::Custom, None);
        j.group = Some("night".into());
        members.push(registered(&*store, j).await);
    }
    let statuses = [
        JobStatus::Succeeded,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Succeeded,
        JobStatus::Cancelled,
        JobStatus::Succeeded,
    ];
    // The first five end one by one; the last two race each other twice over.
    for (j, status) in members.iter().zip(statuses).take(4) {
        store
            .observe_job(by_key(j, seen(Some(status), ObservedBy::Api)))
            .await
            .unwrap();
    }
    assert!(
        !events(&*store, &a.id)
            .await
            .contains(&"job_group.completed".to_string())
    );
    let racing = members[4..]
        .iter()
        .zip(&statuses[4..])
        .flat_map(|(j, status)| {
            [0, 1].map(|_| {
                let store = Arc::clone(&store);
                let observation = by_key(j, seen(Some(*status), ObservedBy::Api));
                Box::pin(async move { store.observe_job(observation).await.unwrap() })
                    as Task<'_, _>
            })
        });
    join_all(racing.collect()).await;
    let page = store
        .list_messages(&a.id, &Default::default(), &first(250))
        .await
        .unwrap();
    let completed: Vec<&Message> = page
        .data
        .iter()
        .filter(|m| m.event_type == "job_group.completed")
        .collect();
    assert_eq!(completed.len(), 1);
    let payload: serde_json::Value =
        serde_json::from_str(completed[0].payload.as_deref().unwrap()).unwrap();
    assert_eq!(
        payload["data"]["counts"],
        json!({"succeeded": 4, "failed": 1, "cancelled": 1})
    );
    assert_eq!(payload["data"]["total"], json!(6));
}

pub async fn jobs_are_listed_by_app_provider_status_and_group(store: Arc<dyn Store>) {
    let (a, b) = (app(None), app(None));
    store.create_app(&a).await.unwrap();
    store.create_app(&b).await.unwrap();
    let mut ids = Vec::new();
    for (n, (app, provider)) in [
        (&a, Provider::OpenaiBatch),
        (&a, Provider::Custom),
        (&b, Provider::Custom),
        (&a, Provider::Custom),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("batch_{n}");
        let mut j = job(
            &app.id,
            provider,
            (provider != Provider::Custom).then_some(&*id),
        );
        if n == 3 {
            j.group = Some("g".into());
        }
        ids.push(registered(&*store, j).await.id);
        tokio_free_sleep_ms(2);
    }
    store
        .observe_job(JobObservation {
            target: JobTarget::Key(ids[1].to_string()),
            observation: seen(Some(JobStatus::Failed), ObservedBy::Api),
            poller: None,
            payload_retention: None,
        })
        .await
        .unwrap();
    let list = |filter: JobFilter| {
        let store = Arc::clone(&store);
        async move {
            let page = store.list_jobs(&filter, &first(50)).await.unwrap();
            page.data.into_iter().map(|j| j.id).collect::<Vec<_>>()
        }
    };
    let of_a = JobFilter {
        app_id: Some(a.id.clone()),
        ..Default::default()
    };
    let mut expected = vec![ids[0].clone(), ids[1].clone(), ids[3].clone()];
    let mut listed = list(of_a.clone()).await;
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
    let custom_failed = JobFilter {
        provider: Some(Provider::Custom),
        status: Some(JobStatus::Failed),
        ..of_a.clone()
    };
    assert_eq!(list(custom_failed).await, [ids[1].clone()]);
    let grouped = JobFilter {
        group: Some("g".into()),
        ..Default::default()
    };
    assert_eq!(list(grouped).await, [ids[3].clone()]);
    let page = store.list_jobs(&of_a, &first(2)).await.unwrap();
    assert_eq!(page.data.len(), 2);
    assert!(!page.done);
}

pub async fn a_submission_holds_its_idempotency_key_until_it_answers(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let now = clock_now();
    let record = |status: u16| IdempotencyRecord {
        key: "submit-1".into(),
        response: IdempotentResponse {
            status,
            body: Vec::new(),
        },
        expires_at: now + chrono::Duration::hours(1),
    };
    let pending = IdempotencyRecord {
        response: IdempotentResponse::pending(),
        ..record(0)
    };
    store.claim_idempotent(&pending, now).await.unwrap();
    let taken = store.claim_idempotent(&pending, now).await.unwrap_err();
    assert_eq!(taken.code(), Code::IdempotencyConflict, "one holder");
    assert_eq!(
        store.get_idempotent("submit-1", now).await.unwrap(),
        Some(IdempotentResponse::pending())
    );

    // Another request's answer does not replace the placeholder; the holder's does, with
    // the job it stored as the body.
    let registration = |replaces_pending: bool| {
        let mut new = job(&a.id, Provider::ReplicatePrediction, Some("p_sub")).registration(
            Some(record(201)),
            None,
            now,
            None,
        );
        new.replaces_pending = replaces_pending;
        new
    };
    let error = store.create_job(registration(false)).await.unwrap_err();
    assert_eq!(error.code(), Code::IdempotencyConflict);
    let stored = store.create_job(registration(true)).await.unwrap();
    let answer = store
        .get_idempotent("submit-1", now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, 201);
    assert_eq!(answer.body, serde_json::to_vec(&stored).unwrap());
    assert_eq!(
        store
            .list_jobs(&JobFilter::default(), &first(10))
            .await
            .unwrap()
            .data
            .len(),
        1,
        "the refused registration stored nothing"
    );

    // Releasing removes a placeholder only, never an answer.
    store.release_pending("submit-1").await.unwrap();
    assert_eq!(
        store.get_idempotent("submit-1", now).await.unwrap(),
        Some(answer)
    );
    let other = IdempotencyRecord {
        key: "submit-2".into(),
        ..pending.clone()
    };
    store.claim_idempotent(&other, now).await.unwrap();
    store.release_pending("submit-2").await.unwrap();
    assert_eq!(store.get_idempotent("submit-2", now).await.unwrap(), None);
    store.claim_idempotent(&other, now).await.unwrap();
}
