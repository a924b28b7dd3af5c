//! The delivery queue: claims, leases, releases and outcomes.

use super::*;

pub async fn claims_lease_and_expired_leases_are_taken_over(store: Arc<dyn Store>) {
    let a = app(Some("tenant"));
    store.create_app(&a).await.unwrap();
    let ep = endpoint(&a.id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    let m = message(&a.id, "a.b", None);
    store.create_message(new_message(m.clone())).await.unwrap();

    let now = clock_now() + chrono::Duration::seconds(1);
    let lease = Duration::from_secs(30);
    let jobs = store.claim_due("node-a", now, lease, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(*job.message, m);
    assert_eq!(*job.endpoint, ep);
    assert_eq!(job.app_uid.as_deref(), Some("tenant"));
    let leased = store.get_destination(&a.id, &m.id, &ep.id).await.unwrap();
    assert_eq!(
        leased.next_attempt.map(|t| t.timestamp_millis()),
        Some((now + chrono::Duration::seconds(30)).timestamp_millis()),
        "a delivery in flight is due again when its lease ends"
    );
    assert!(
        store
            .claim_due("node-b", now, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let after_lease = now + chrono::Duration::seconds(31);
    let taken = store
        .claim_due("node-b", after_lease, lease, 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1, "an expired lease is taken over");

    // Disabled endpoints are not claimed.
    let m2 = message(&a.id, "a.b", None);
    store.create_message(new_message(m2)).await.unwrap();
    let mut off = ep.clone();
    off.disabled = true;
    store.update_endpoint(&off, true).await.unwrap();
    let later = after_lease + chrono::Duration::seconds(60);
    assert!(
        store
            .claim_due("node-c", later, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn claims_carry_each_endpoint_as_last_changed(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let mut ep = endpoint(&a.id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    let lease = Duration::from_secs(30);
    // Sends a message, claims it, and returns the endpoint its job carries and a failed
    // outcome of the attempt.
    async fn claimed(store: &dyn Store, app: &AppId) -> (Endpoint, AttemptOutcome) {
        let m = message(app, "a.b", None);
        store.create_message(new_message(m.clone())).await.unwrap();
        let now = clock_now() + chrono::Duration::seconds(1);
        let lease = Duration::from_secs(30);
        let jobs = store.claim_due("n", now, lease, 10).await.unwrap();
        assert_eq!(jobs.len(), 1);
        let endpoint = Endpoint::clone(&jobs[0].endpoint);
        let mut done = outcome(&m, &endpoint.id, MessageStatus::Fail, None, 500);
        done.endpoint_failing = Some(true);
        (endpoint, done)
    }
    let (first, failed) = claimed(store.as_ref(), &a.id).await;
    assert_eq!(first, ep);

    // A recorded outcome that marks the endpoint failing is in the next claim.
    store.record_outcomes(vec![failed].into()).await.unwrap();
    let (second, done) = claimed(store.as_ref(), &a.id).await;
    assert!(second.failing_since.is_some());
    store.record_outcomes(vec![done].into()).await.unwrap();

    // So is an update: a new URL, headers and a rotated secret.
    ep.url = "https://example.test/moved".into();
    ep.headers = BTreeMap::from([("x-team".into(), "b".into())]);
    ep.secrets.insert(
        0,
        EndpointSecret {
            key: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into(),
            expires_at: None,
        },
    );
    store.update_endpoint(&ep, false).await.unwrap();
    let (third, done) = claimed(store.as_ref(), &a.id).await;
    assert_eq!(third.url, ep.url);
    assert_eq!(third.headers, ep.headers);
    assert_eq!(third.secrets, ep.secrets);
    store.record_outcomes(vec![done].into()).await.unwrap();

    // An endpoint disabled by an outcome is not claimed until it is enabled again.
    let m = message(&a.id, "a.b", None);
    store.create_message(new_message(m.clone())).await.unwrap();
    let now = clock_now() + chrono::Duration::seconds(1);
    assert_eq!(store.claim_due("n", now, lease, 10).await.unwrap().len(), 1);
    let mut gone = outcome(&m, &ep.id, MessageStatus::Fail, None, 410);
    gone.disable_endpoint = true;
    store.record_outcomes(vec![gone].into()).await.unwrap();
    let pending = message(&a.id, "a.b", None);
    store
        .create_message(NewMessage {
            only_endpoint: Some(ep.id.clone()),
            ..new_message(pending.clone())
        })
        .await
        .unwrap();
    let now = clock_now() + chrono::Duration::seconds(1);
    assert!(
        store
            .claim_due("n", now, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    ep.disabled = false;
    store.update_endpoint(&ep, true).await.unwrap();
    let jobs = store.claim_due("n", now, lease, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert!(!jobs[0].endpoint.disabled);
    assert_eq!(jobs[0].endpoint.failing_since, None, "enabling clears it");
}

pub async fn released_deliveries_fall_due_again_without_an_attempt(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let ep = endpoint(&a.id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    let m = message(&a.id, "a.b", None);
    store.create_message(new_message(m.clone())).await.unwrap();
    let now = clock_now() + chrono::Duration::seconds(1);
    let lease = Duration::from_secs(30);
    assert_eq!(store.claim_due("n", now, lease, 10).await.unwrap().len(), 1);

    let retry_at = now + chrono::Duration::seconds(2);
    store
        .release(vec![(m.id.clone(), ep.id.clone())], retry_at)
        .await
        .unwrap();
    assert!(
        store
            .claim_due("n", now, lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "not before retry_at"
    );
    let again = store.claim_due("other", retry_at, lease, 10).await.unwrap();
    assert_eq!(
        again.len(),
        1,
        "claimable at retry_at although the lease had not expired"
    );
    let attempts = store
        .list_attempts(&a.id, &AttemptFilter::default(), &first(10))
        .await
        .unwrap();
    assert!(attempts.data.is_empty(), "a release is not an attempt");
}

pub async fn outcomes_reschedule_and_finish_deliveries(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let ep = endpoint(&a.id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    let m = message(&a.id, "a.b", None);
    store.create_message(new_message(m.clone())).await.unwrap();
    let now = clock_now() + chrono::Duration::seconds(1);
    let lease = Duration::from_secs(30);
    assert_eq!(store.claim_due("n", now, lease, 10).await.unwrap().len(), 1);

    let retry_at = now + chrono::Duration::seconds(5);
    let mut failed = outcome(&m, &ep.id, MessageStatus::Pending, Some(retry_at), 500);
    failed.endpoint_failing = Some(true);
    store.record_outcomes(vec![failed].into()).await.unwrap();
    let destination = store.get_destination(&a.id, &m.id, &ep.id).await.unwrap();
    assert_eq!(destination.status, MessageStatus::Pending);
    assert_eq!(
        destination.next_attempt.map(|t| t.timestamp_millis()),
        Some(retry_at.timestamp_millis())
    );
    assert!(
        store
            .get_endpoint(&a.id, ep.id.as_str())
            .await
            .unwrap()
            .failing_since
            .is_some()
    );
    assert!(
        store
            .claim_due("n", now, lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    assert_eq!(
        store
            .next_due(now)
            .await
            .unwrap()
            .map(|t| t.timestamp_millis()),
        Some(retry_at.timestamp_millis())
    );
    let jobs = store.claim_due("n", retry_at, lease, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);

    let mut ok = outcome(&m, &ep.id, MessageStatus::Success, None, 200);
    ok.attempts = 2;
    ok.endpoint_failing = Some(false);
    store.record_outcomes(vec![ok].into()).await.unwrap();
    let destination = store.get_destination(&a.id, &m.id, &ep.id).await.unwrap();
    assert_eq!(
        (destination.status, destination.next_attempt),
        (MessageStatus::Success, None)
    );
    assert_eq!(destination.attempts, 2);
    assert_eq!(store.next_due(now).await.unwrap(), None);
    assert!(
        store
            .get_endpoint(&a.id, ep.id.as_str())
            .await
            .unwrap()
            .failing_since
            .is_none()
    );

    let stats = store
        .endpoint_stats(&a.id, &ep.id, now - chrono::Duration::days(1), now)
        .await
        .unwrap();
    assert_eq!((stats.success, stats.fail, stats.pending), (1, 0, 0));

    let mut gone = outcome(&m, &ep.id, MessageStatus::Fail, None, 410);
    gone.disable_endpoint = true;
    store.record_outcomes(vec![gone].into()).await.unwrap();
    assert!(
        store
            .get_endpoint(&a.id, ep.id.as_str())
            .await
            .unwrap()
            .disabled
    );
}

pub async fn a_batch_of_outcomes_applies_in_order(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let (e1, e2) = (endpoint(&a.id, None, None), endpoint(&a.id, None, None));
    store.create_endpoint(&e1).await.unwrap();
    store.create_endpoint(&e2).await.unwrap();
    let messages: Vec<Message> = (0..4).map(|_| message(&a.id, "a.b", None)).collect();
    for m in &messages {
        store.create_message(new_message(m.clone())).await.unwrap();
    }
    let t0 = clock_now();
    let at = |seconds: i64| t0 + chrono::Duration::seconds(seconds);
    let step = |m: &Message, ep: &EndpointId, well: bool, seconds: i64| {
        let (status, code) = if well {
            (MessageStatus::Success, 200)
        } else {
            (MessageStatus::Fail, 500)
        };
        let mut outcome = outcome(m, ep, status, None, code);
        outcome.attempt.created_at = at(seconds);
        outcome.endpoint_failing = Some(!well);
        outcome
    };
    // e1 exhausts, recovers, then exhausts twice: failing since the first of those two.
    // e2 exhausts, then recovers: well.
    let batch = vec![
        step(&messages[0], &e1.id, false, 1),
        step(&messages[0], &e2.id, false, 1),
        step(&messages[1], &e1.id, true, 2),
        step(&messages[1], &e2.id, true, 2),
        step(&messages[2], &e1.id, false, 3),
        step(&messages[3], &e1.id, false, 4),
    ];
    store.record_outcomes(batch.clone().into()).await.unwrap();
    let failing_since = |endpoint: Endpoint| endpoint.failing_since.map(|t| t.timestamp_millis());
    let e1_now = store.get_endpoint(&a.id, e1.id.as_str()).await.unwrap();
    let e2_now = store.get_endpoint(&a.id, e2.id.as_str()).await.unwrap();
    assert_eq!(failing_since(e1_now), Some(at(3).timestamp_millis()));
    assert_eq!(failing_since(e2_now), None);

    // Failing again while failing keeps the earlier start.
    store
        .record_outcomes(vec![step(&messages[3], &e1.id, false, 5)].into())
        .await
        .unwrap();
    let e1_now = store.get_endpoint(&a.id, e1.id.as_str()).await.unwrap();
    assert_eq!(failing_since(e1_now), Some(at(3).timestamp_millis()));

    // Every attempt of the batch is recorded, and every delivery moved.
    let attempts = store
        .list_attempts(&a.id, &AttemptFilter::default(), &first(20))
        .await
        .unwrap();
    assert_eq!(attempts.data.len(), batch.len() + 1);
    for outcome in &batch {
        assert!(
            attempts.data.contains(&outcome.attempt),
            "{:?}",
            outcome.attempt.id
        );
    }
    let delivered = store
        .get_destination(&a.id, &messages[1].id, &e2.id)
        .await
        .unwrap();
    assert_eq!(delivered.status, MessageStatus::Success);
    let failed = store
        .get_destination(&a.id, &messages[2].id, &e1.id)
        .await
        .unwrap();
    assert_eq!(failed.status, MessageStatus::Fail);
}

/// An answer is untrusted input: one holding NUL characters (which PostgreSQL's text and
/// jsonb cannot hold) is recorded with them replaced by U+FFFD, the same on every
/// backend, and does not fail the other outcomes of its batch.
pub async fn an_answer_holding_nul_is_recorded_with_its_batch(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let ep = endpoint(&a.id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    let (one, two) = (message(&a.id, "a.b", None), message(&a.id, "a.b", None));
    for m in [&one, &two] {
        store.create_message(new_message(m.clone())).await.unwrap();
    }
    let now = clock_now() + chrono::Duration::seconds(1);
    let claimed = store.claim_due("n", now, Duration::from_secs(30), 10).await;
    assert_eq!(claimed.unwrap().len(), 2);

    let mut hostile = outcome(&one, &ep.id, MessageStatus::Success, None, 200);
    hostile.attempt.response = Some("ok\0then\0more".into());
    hostile.attempt.response_headers = vec![("x-odd\0name".into(), "v\0alue".into())];
    let plain = outcome(&two, &ep.id, MessageStatus::Success, None, 200);
    store
        .record_outcomes(vec![hostile, plain].into())
        .await
        .expect("a NUL in an answer does not fail the batch");

    for m in [&one, &two] {
        let destination = store.get_destination(&a.id, &m.id, &ep.id).await.unwrap();
        assert_eq!(destination.status, MessageStatus::Success);
    }
    let filter = AttemptFilter {
        msg_id: Some(one.id.clone()),
        ..AttemptFilter::default()
    };
    let attempts = store
        .list_attempts(&a.id, &filter, &first(10))
        .await
        .unwrap();
    let attempt = &attempts.data[0];
    assert_eq!(
        attempt.response.as_deref(),
        Some("ok\u{FFFD}then\u{FFFD}more")
    );
    assert_eq!(
        attempt.response_headers,
        vec![("x-odd\u{FFFD}name".to_owned(), "v\u{FFFD}alue".to_owned())]
    );
}

pub async fn claims_carry_the_apps_throttle_rate(store: Arc<dyn Store>) {
    let mut throttled = app(None);
    throttled.throttle_rate = Some(7);
    let free = app(None);
    for a in [&throttled, &free] {
        store.create_app(a).await.unwrap();
        store
            .create_endpoint(&endpoint(&a.id, None, None))
            .await
            .unwrap();
        store
            .create_message(new_message(message(&a.id, "a.b", None)))
            .await
            .unwrap();
    }
    let now = clock_now() + chrono::Duration::seconds(1);
    let jobs = store
        .claim_due("node-a", now, Duration::from_secs(30), 10)
        .await
        .unwrap();
    let rate_of = |id: &AppId| {
        let job = jobs.iter().find(|job| job.endpoint.app_id == *id).unwrap();
        job.app_throttle_rate
    };
    assert_eq!(jobs.len(), 2);
    assert_eq!(rate_of(&throttled.id), Some(7));
    assert_eq!(rate_of(&free.id), None);
}

pub async fn a_heartbeat_counts_the_worker_once(store: Arc<dyn Store>) {
    let ttl = Duration::from_secs(60);
    let first = store.heartbeat("node-a", ttl).await.unwrap();
    assert!(first >= 1, "a worker counts itself");
    assert_eq!(
        store.heartbeat("node-a", ttl).await.unwrap(),
        first,
        "beating again is not another worker"
    );
}

/// Operational events are messages created with the outcome that caused them, in its
/// transaction: a crash or a failure records both or neither, never an outcome whose event
/// is lost.
pub async fn an_outcome_commits_with_its_event_messages_or_not_at_all(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let ep = endpoint(&a.id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    let ops = app(Some("operational"));
    store.create_app(&ops).await.unwrap();
    let ops_ep = endpoint(&ops.id, None, None);
    store.create_endpoint(&ops_ep).await.unwrap();
    let lease = Duration::from_secs(30);
    let attempts_of = |m: &Message| {
        let store = Arc::clone(&store);
        let (app, filter) = (
            m.app_id.clone(),
            AttemptFilter {
                msg_id: Some(m.id.clone()),
                ..AttemptFilter::default()
            },
        );
        async move {
            store
                .list_attempts(&app, &filter, &first(10))
                .await
                .unwrap()
                .data
        }
    };

    // Both: the attempt, and the event with its delivery to the operator, queued.
    let m = message(&a.id, "a.b", None);
    store.create_message(new_message(m.clone())).await.unwrap();
    let now = clock_now() + chrono::Duration::seconds(1);
    assert_eq!(store.claim_due("n", now, lease, 10).await.unwrap().len(), 1);
    let event = message(&ops.id, "message.attempt.exhausted", None);
    let mut exhausted = outcome(&m, &ep.id, MessageStatus::Fail, None, 500);
    exhausted.endpoint_failing = Some(true);
    exhausted.messages = vec![new_message(event.clone())];
    store.record_outcomes(vec![exhausted].into()).await.unwrap();
    assert_eq!(attempts_of(&m).await.len(), 1);
    assert_eq!(
        store.get_message(&ops.id, event.id.as_str()).await.unwrap(),
        event
    );
    let queued = store
        .get_destination(&ops.id, &event.id, &ops_ep.id)
        .await
        .unwrap();
    assert!(queued.next_attempt.is_some(), "{queued:?}");
    let now = clock_now() + chrono::Duration::seconds(1);
    let jobs = store.claim_due("n", now, lease, 10).await.unwrap();
    assert_eq!(jobs.len(), 1, "the event is delivered as any message is");
    assert_eq!(jobs[0].message.id, event.id);
    assert_eq!(jobs[0].endpoint.id, ops_ep.id);

    // Neither: an event that cannot go in (its id is taken) takes its outcome with it.
    let m2 = message(&a.id, "a.b", None);
    store.create_message(new_message(m2.clone())).await.unwrap();
    let now = clock_now() + chrono::Duration::seconds(1);
    assert_eq!(store.claim_due("n", now, lease, 10).await.unwrap().len(), 1);
    let before = store.get_destination(&a.id, &m2.id, &ep.id).await.unwrap();
    let mut refused = outcome(&m2, &ep.id, MessageStatus::Fail, None, 500);
    refused.messages = vec![new_message(event.clone())];
    assert!(store.record_outcomes(vec![refused].into()).await.is_err());
    assert!(
        attempts_of(&m2).await.is_empty(),
        "the attempt went with it"
    );
    assert_eq!(
        store.get_destination(&a.id, &m2.id, &ep.id).await.unwrap(),
        before,
        "the delivery is still leased, to be tried again"
    );
    let after_lease = now + chrono::Duration::seconds(31);
    let again = store.claim_due("n", after_lease, lease, 10).await.unwrap();
    assert!(again.iter().any(|job| job.message.id == m2.id));

    // An event for an application deleted meanwhile is dropped; its outcome is recorded.
    let gone = app(None);
    store.create_app(&gone).await.unwrap();
    store.delete_app(&gone.id).await.unwrap();
    let mut orphan = outcome(&m2, &ep.id, MessageStatus::Fail, None, 500);
    orphan.messages = vec![new_message(message(&gone.id, "endpoint.disabled", None))];
    store.record_outcomes(vec![orphan].into()).await.unwrap();
    assert_eq!(attempts_of(&m2).await.len(), 1);
}

/// A node that starts again under its name ends the leases its previous life held: the
/// deliveries are due at once for any node, while another node's leases stand.
pub async fn a_claim_hands_out_the_oldest_due_first(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let ep = endpoint(&a.id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    let mut created = Vec::new();
    for _ in 0..5 {
        let m = message(&a.id, "a.b", None);
        store.create_message(new_message(m.clone())).await.unwrap();
        created.push(m.id);
        tokio_free_sleep_ms(2);
    }
    // The newest is due first now: it was sent again.
    let resent = created.remove(4);
    store
        .requeue(
            &a.id,
            &resent,
            &ep.id,
            TriggerType::Manual,
            clock_now() - chrono::Duration::seconds(60),
        )
        .await
        .unwrap();
    created.insert(0, resent);
    let now = clock_now() + chrono::Duration::seconds(1);
    let jobs = store
        .claim_due("node", now, Duration::from_secs(30), 10)
        .await
        .unwrap();
    let order: Vec<MessageId> = jobs.iter().map(|job| job.message.id.clone()).collect();
    assert_eq!(order, created);
}

pub async fn a_restarted_node_releases_its_own_leases(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let ep = endpoint(&a.id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    for _ in 0..3 {
        let m = message(&a.id, "a.b", None);
        store.create_message(new_message(m)).await.unwrap();
    }
    let now = clock_now() + chrono::Duration::seconds(1);
    let lease = Duration::from_secs(300);
    assert_eq!(
        store.claim_due("dead", now, lease, 2).await.unwrap().len(),
        2
    );
    assert_eq!(
        store.claim_due("alive", now, lease, 2).await.unwrap().len(),
        1
    );
    assert!(
        store
            .claim_due("other", now, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(store.release_owned("dead").await.unwrap(), 2);
    let reclaimed = store.claim_due("other", now, lease, 10).await.unwrap();
    assert_eq!(reclaimed.len(), 2, "only the restarted node's leases end");
    assert_eq!(store.release_owned("nobody").await.unwrap(), 0);
}

/// A claim passes over the deliveries of the apps it is told to skip, however much older
/// they are, and takes the other apps' deliveries.
pub async fn a_claim_passes_over_the_apps_it_is_told_to_skip(store: Arc<dyn Store>) {
    let (busy, quiet) = (app(None), app(None));
    let mut endpoints = Vec::new();
    for a in [&busy, &quiet] {
        store.create_app(a).await.unwrap();
        let ep = endpoint(&a.id, None, None);
        store.create_endpoint(&ep).await.unwrap();
        endpoints.push(ep);
    }
    for _ in 0..5 {
        let m = message(&busy.id, "a.b", None);
        store.create_message(new_message(m)).await.unwrap();
    }
    tokio_free_sleep_ms(5);
    let later = message(&quiet.id, "a.b", None);
    store
        .create_message(new_message(later.clone()))
        .await
        .unwrap();

    let now = clock_now() + chrono::Duration::seconds(1);
    let lease = Duration::from_secs(60);
    let skip = [busy.id.clone()];
    let claimed = store
        .claim_due_skipping("n", now, lease, 2, &skip)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "only the quiet app's delivery");
    assert_eq!(claimed[0].message.id, later.id);
    let rest = store.claim_due("n", now, lease, 10).await.unwrap();
    assert_eq!(rest.len(), 5, "the skipped deliveries stay due");
    assert!(rest.iter().all(|job| job.message.app_id == busy.id));
}

/// A resend asked for while an attempt was in flight is served by whoever claims the
/// delivery next; if that is another claim (the first lease ran out), its outcome ends the
/// delivery as any outcome does, rather than leaving it due again for the first attempt's
/// resend that has already been made.
pub async fn a_resend_is_served_once_after_its_lease_ran_out(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let ep = endpoint(&a.id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    let m = message(&a.id, "a.b", None);
    store.create_message(new_message(m.clone())).await.unwrap();
    let now = clock_now() + chrono::Duration::seconds(1);
    let lease = Duration::from_secs(30);
    assert_eq!(
        store.claim_due("first", now, lease, 1).await.unwrap().len(),
        1
    );
    // A resend while the first attempt is in flight.
    store
        .requeue(&a.id, &m.id, &ep.id, TriggerType::Manual, now)
        .await
        .unwrap();
    // The first node dies; its lease runs out and another node claims the delivery.
    let later = now + chrono::Duration::seconds(60);
    assert_eq!(
        store
            .claim_due("second", later, lease, 1)
            .await
            .unwrap()
            .len(),
        1
    );
    let mut done = outcome(&m, &ep.id, MessageStatus::Success, None, 200);
    done.attempt.created_at = later;
    store.record_outcomes(vec![done].into()).await.unwrap();
    let destination = store.get_destination(&a.id, &m.id, &ep.id).await.unwrap();
    assert_eq!(
        (destination.status, destination.next_attempt),
        (MessageStatus::Success, None)
    );
    let again = later + chrono::Duration::seconds(1);
    assert!(
        store
            .claim_due("third", again, lease, 1)
            .await
            .unwrap()
            .is_empty(),
        "delivered once: nothing is due again"
    );
}

/// Deliveries leased as their message is created: handed back ready to make, as a claim
/// would, never claimed by another worker while the lease runs, due again when it ends
/// or when their owner starts again; at most the lease's room, never to a disabled
/// endpoint.
pub async fn a_create_under_a_lease_hands_back_its_deliveries(store: Arc<dyn Store>) {
    let mut a = app(Some("tenant"));
    a.throttle_rate = Some(7);
    store.create_app(&a).await.unwrap();
    let mut endpoints = Vec::new();
    for _ in 0..3 {
        let ep = endpoint(&a.id, None, None);
        store.create_endpoint(&ep).await.unwrap();
        endpoints.push(ep);
    }
    let created_at = clock_now();
    let until = created_at + chrono::Duration::seconds(30);
    let lease = |most| CreateLease {
        owner: "node-a".into(),
        until,
        most,
    };
    let m = message(&a.id, "a.b", None);
    let created = store
        .create_message(NewMessage {
            lease: Some(lease(2)),
            ..new_message(m.clone())
        })
        .await
        .unwrap();
    assert_eq!(created.endpoints.len(), 3);
    assert_eq!(created.leased.len(), 2, "no more than the lease's room");
    for (job, id) in created.leased.iter().zip(&created.endpoints) {
        assert_eq!(&job.endpoint.id, id, "leased in the order of the endpoints");
        let stored = endpoints.iter().find(|ep| &ep.id == id).unwrap();
        assert_eq!(*job.endpoint, *stored, "the endpoint as a claim carries it");
        assert_eq!(*job.message, m);
        assert_eq!(job.app_uid.as_deref(), Some("tenant"));
        assert_eq!(job.app_throttle_rate, Some(7));
        assert_eq!(job.destination.status, MessageStatus::Sending);
        assert_eq!(job.destination.attempts, 0);
        let row = store.get_destination(&a.id, &m.id, id).await.unwrap();
        assert_eq!(row.status, MessageStatus::Sending);
        assert_eq!(
            row.next_attempt.map(|t| t.timestamp_millis()),
            Some(until.timestamp_millis()),
            "a leased delivery is due again when its lease ends"
        );
        assert_eq!(row.next_attempt, job.destination.next_attempt);
    }

    // Another worker claims only the delivery left out of the lease.
    let now = created_at + chrono::Duration::seconds(1);
    let claim = Duration::from_secs(60);
    let other = store.claim_due("node-b", now, claim, 10).await.unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].endpoint.id, created.endpoints[2]);

    // Once the lease has run out, with no attempt recorded, they are due again.
    let after = until + chrono::Duration::seconds(1);
    let taken = store.claim_due("node-b", after, claim, 10).await.unwrap();
    let mut taken: Vec<EndpointId> = taken
        .into_iter()
        .map(|job| job.endpoint.id.clone())
        .collect();
    taken.sort();
    let mut leased: Vec<EndpointId> = created.endpoints[..2].to_vec();
    leased.sort();
    assert_eq!(taken, leased, "nothing leased is lost");

    // The owner, started again, ends its leases at once.
    let m2 = message(&a.id, "a.b", None);
    let created = store
        .create_message(NewMessage {
            lease: Some(lease(10)),
            ..new_message(m2)
        })
        .await
        .unwrap();
    assert_eq!(created.leased.len(), 3);
    assert!(
        store
            .claim_due("node-b", now, claim, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.release_owned("node-a").await.unwrap(), 3);
    assert_eq!(
        store
            .claim_due("node-b", now, claim, 10)
            .await
            .unwrap()
            .len(),
        3
    );

    // A message for a disabled endpoint alone (send-example) leases nothing.
    let mut off = endpoints[0].clone();
    off.disabled = true;
    store.update_endpoint(&off, true).await.unwrap();
    let created = store
        .create_message(NewMessage {
            lease: Some(lease(10)),
            only_endpoint: Some(off.id.clone()),
            ..new_message(message(&a.id, "a.b", None))
        })
        .await
        .unwrap();
    assert_eq!(created.endpoints, vec![off.id.clone()]);
    assert!(created.leased.is_empty());
    // Without a lease nothing is leased.
    let created = store
        .create_message(new_message(message(&a.id, "a.b", None)))
        .await
        .unwrap();
    assert_eq!(created.endpoints.len(), 2);
    assert!(created.leased.is_empty());
}
