//! Messages, fan-out, resend, recover and attempts.

use super::*;

pub async fn messages_fan_out_by_type_and_channel(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let all = endpoint(&a.id, None, None);
    let typed = endpoint(&a.id, Some(&["a.b"]), None);
    let channeled = endpoint(&a.id, None, Some(&["eu"]));
    let mut disabled = endpoint(&a.id, None, None);
    disabled.disabled = true;
    for ep in [&all, &typed, &channeled, &disabled] {
        store.create_endpoint(ep).await.unwrap();
    }
    let sorted = |mut ids: Vec<EndpointId>| {
        ids.sort();
        ids
    };
    let m1 = message(&a.id, "a.b", None);
    let created = store.create_message(new_message(m1.clone())).await.unwrap();
    assert_eq!(
        sorted(created.endpoints),
        sorted(vec![all.id.clone(), typed.id.clone()])
    );
    let m2 = message(&a.id, "c.d", Some(&["eu"]));
    let created = store.create_message(new_message(m2.clone())).await.unwrap();
    assert_eq!(
        sorted(created.endpoints),
        sorted(vec![all.id.clone(), channeled.id.clone()])
    );
    let only = NewMessage {
        only_endpoint: Some(typed.id.clone()),
        ..new_message(message(&a.id, "x.y", None))
    };
    assert_eq!(
        store.create_message(only).await.unwrap().endpoints,
        vec![typed.id.clone()]
    );

    assert_eq!(store.get_message(&a.id, m1.id.as_str()).await.unwrap(), m1);
    let eu = MessageFilter {
        channel: Some("eu".into()),
        event_types: None,
    };
    let listed = store.list_messages(&a.id, &eu, &first(10)).await.unwrap();
    assert_eq!(listed.data, vec![m2.clone()]);
    let typed_filter = MessageFilter {
        channel: None,
        event_types: Some(vec!["a.b".into(), "zzz".into()]),
    };
    let listed = store
        .list_messages(&a.id, &typed_filter, &first(10))
        .await
        .unwrap();
    assert_eq!(listed.data, vec![m1.clone()]);

    let destination = store.get_destination(&a.id, &m1.id, &all.id).await.unwrap();
    assert_eq!(destination.status, MessageStatus::Sending);
    assert!(destination.next_attempt.is_some());
    let destinations = store
        .list_destinations(&a.id, &m1.id, &first(10))
        .await
        .unwrap();
    assert_eq!(destinations.data.len(), 2);

    store.expunge_message(&a.id, &m1.id).await.unwrap();
    assert_eq!(
        store
            .get_message(&a.id, m1.id.as_str())
            .await
            .unwrap()
            .payload,
        None
    );
}

pub async fn event_id_is_unique_per_app(store: Arc<dyn Store>) {
    let (a, b) = (app(None), app(None));
    store.create_app(&a).await.unwrap();
    store.create_app(&b).await.unwrap();
    let mut m = message(&a.id, "a.b", None);
    m.event_id = Some("evt-1".into());
    store.create_message(new_message(m.clone())).await.unwrap();
    let mut again = message(&a.id, "a.b", None);
    again.event_id = Some("evt-1".into());
    assert!(matches!(
        store.create_message(new_message(again)).await,
        Err(Error::Conflict { .. })
    ));
    let mut elsewhere = message(&b.id, "a.b", None);
    elsewhere.event_id = Some("evt-1".into());
    store.create_message(new_message(elsewhere)).await.unwrap();
    assert_eq!(store.get_message(&a.id, "evt-1").await.unwrap().id, m.id);
}

pub async fn recover_and_requeue_bring_back_failed_deliveries(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let ep = endpoint(&a.id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    let m = message(&a.id, "a.b", None);
    store.create_message(new_message(m.clone())).await.unwrap();
    let now = clock_now() + chrono::Duration::seconds(1);
    let lease = Duration::from_secs(30);
    store.claim_due("n", now, lease, 10).await.unwrap();
    store
        .record_outcomes(vec![outcome(&m, &ep.id, MessageStatus::Fail, None, 500)].into())
        .await
        .unwrap();
    assert!(
        store
            .claim_due("n", now, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let day = chrono::Duration::days(1);
    let recovered = store
        .recover(&a.id, &ep.id, now - day, now + day, now)
        .await
        .unwrap();
    assert_eq!(recovered, 1);
    let jobs = store.claim_due("n", now + day, lease, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].destination.trigger, TriggerType::Manual);
    assert_eq!(
        store
            .recover(&a.id, &ep.id, now - day, now + day, now)
            .await
            .unwrap(),
        0,
        "a delivery in flight is not recovered twice"
    );
    store
        .record_outcomes(vec![outcome(&m, &ep.id, MessageStatus::Fail, None, 500)].into())
        .await
        .unwrap();
    store
        .requeue(&a.id, &m.id, &ep.id, TriggerType::Manual, now)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_due("n", now + day, lease, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(matches!(
        store
            .requeue(&a.id, &m.id, &EndpointId::new(), TriggerType::Manual, now)
            .await,
        Err(Error::NotFound(_))
    ));
}

pub async fn attempts_filter_and_expunge(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let (e1, e2) = (endpoint(&a.id, None, None), endpoint(&a.id, None, None));
    store.create_endpoint(&e1).await.unwrap();
    store.create_endpoint(&e2).await.unwrap();
    let m = message(&a.id, "a.b", Some(&["eu"]));
    store.create_message(new_message(m.clone())).await.unwrap();
    let failed = outcome(&m, &e1.id, MessageStatus::Pending, None, 503);
    let ok = outcome(&m, &e2.id, MessageStatus::Success, None, 204);
    store
        .record_outcomes(vec![failed.clone(), ok.clone()].into())
        .await
        .unwrap();

    let by_endpoint = AttemptFilter {
        endpoint_id: Some(e1.id.clone()),
        ..AttemptFilter::default()
    };
    let page = store
        .list_attempts(&a.id, &by_endpoint, &first(10))
        .await
        .unwrap();
    assert_eq!(page.data, vec![failed.attempt.clone()]);
    let by_class = AttemptFilter {
        msg_id: Some(m.id.clone()),
        status_code_class: Some(200),
        ..AttemptFilter::default()
    };
    let page = store
        .list_attempts(&a.id, &by_class, &first(10))
        .await
        .unwrap();
    assert_eq!(page.data, vec![ok.attempt.clone()]);
    let by_status = AttemptFilter {
        status: Some(MessageStatus::Fail),
        channel: Some("eu".into()),
        ..AttemptFilter::default()
    };
    assert_eq!(
        store
            .list_attempts(&a.id, &by_status, &first(10))
            .await
            .unwrap()
            .data
            .len(),
        1
    );
    let msgs = store
        .list_endpoint_messages(
            &a.id,
            &e2.id,
            Some(MessageStatus::Success),
            &MessageFilter::default(),
            &first(10),
        )
        .await
        .unwrap();
    assert_eq!(msgs.data.len(), 1);
    assert_eq!(msgs.data[0].0.id, m.id);

    store
        .expunge_attempt(&a.id, &m.id, &ok.attempt.id)
        .await
        .unwrap();
    let read = store
        .get_attempt(&a.id, &m.id, &ok.attempt.id)
        .await
        .unwrap();
    assert_eq!(read.response, None);
    assert_eq!(read.response_headers, ok.attempt.response_headers);
    assert_eq!(read.request_headers, ok.attempt.request_headers);
    assert!(matches!(
        store.get_attempt(&a.id, &m.id, &AttemptId::new()).await,
        Err(Error::NotFound(_))
    ));
}

/// Payloads go at their expiry, and queued deliveries of them fail.
pub async fn payloads_expire_at_their_time(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let ep = endpoint(&a.id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    let now = clock_now();
    let kept_until = |message: &Message, hours: Option<i64>| NewMessage {
        payload_expires_at: hours.map(|hours| now + chrono::Duration::hours(hours)),
        ..new_message(message.clone())
    };
    let (soon, later, never) = (
        message(&a.id, "a.b", None),
        message(&a.id, "a.b", None),
        message(&a.id, "a.b", None),
    );
    store
        .create_message(kept_until(&soon, Some(1)))
        .await
        .unwrap();
    store
        .create_message(kept_until(&later, Some(3)))
        .await
        .unwrap();
    store
        .create_message(kept_until(&never, None))
        .await
        .unwrap();
    let payload = |id: MessageId| {
        let (store, app) = (Arc::clone(&store), a.id.clone());
        async move { store.get_message(&app, id.as_str()).await.unwrap().payload }
    };

    assert_eq!(store.expire_payloads(now).await.unwrap(), 0, "none yet");
    let at_expiry = now + chrono::Duration::hours(1);
    assert_eq!(
        store.expire_payloads(at_expiry).await.unwrap(),
        0,
        "kept until its expiry, not at it"
    );
    assert_eq!(
        store
            .expire_payloads(at_expiry + chrono::Duration::milliseconds(1))
            .await
            .unwrap(),
        1
    );
    assert_eq!(payload(soon.id.clone()).await, None);
    assert_eq!(payload(later.id.clone()).await, later.payload);
    assert_eq!(payload(never.id.clone()).await, never.payload);
    let failed = store
        .get_destination(&a.id, &soon.id, &ep.id)
        .await
        .unwrap();
    assert_eq!(
        (failed.status, failed.next_attempt),
        (MessageStatus::Fail, None),
        "a delivery cannot go out without its payload"
    );
    let queued = store
        .get_destination(&a.id, &later.id, &ep.id)
        .await
        .unwrap();
    assert_eq!(queued.status, MessageStatus::Sending);
    assert!(queued.next_attempt.is_some());

    let far = now + chrono::Duration::days(3650);
    assert_eq!(store.expire_payloads(far).await.unwrap(), 1, "only `later`");
    assert_eq!(payload(later.id.clone()).await, None);
    assert_eq!(
        payload(never.id.clone()).await,
        never.payload,
        "no expiry: kept until expunged"
    );
    assert_eq!(store.expire_payloads(far).await.unwrap(), 0);
}

/// Creates arriving together for two applications, each message of its own shape (no
/// channels, none, one or two; headers or none; one endpoint only), each keep their own
/// channels and headers and go to their own endpoints: a group commit writes them in
/// one statement, and nothing of one message may land in another.
pub async fn creates_together_keep_their_own_channels_headers_and_endpoints(store: Arc<dyn Store>) {
    let (a, b) = (app(None), app(None));
    let all = endpoint(&a.id, None, None);
    let typed = endpoint(&a.id, Some(&["t.b"]), None);
    let channeled = endpoint(&a.id, None, Some(&["x"]));
    let other = endpoint(&b.id, None, Some(&["y"]));
    for application in [&a, &b] {
        store.create_app(application).await.unwrap();
    }
    for ep in [&all, &typed, &channeled, &other] {
        store.create_endpoint(ep).await.unwrap();
    }
    let shapes: [Option<&[&str]>; 4] = [None, Some(&[]), Some(&["x"]), Some(&["y", "x"])];
    let mut news = Vec::new();
    for n in 0..48 {
        let application = if n % 3 == 2 { &b.id } else { &a.id };
        let event_type = if n % 2 == 0 { "t.a" } else { "t.b" };
        let mut m = message(application, event_type, shapes[n % 4]);
        m.payload = Some(format!(r#"{{"n": {n}}}"#));
        if n % 5 == 0 {
            m.headers = BTreeMap::from([("x-n".into(), n.to_string())]);
        }
        let mut new = new_message(m);
        if n % 7 == 3 && application == &a.id {
            new.only_endpoint = Some(typed.id.clone());
        }
        news.push(new);
    }
    let wanted = |new: &NewMessage| {
        let m = &new.message;
        let mut ids: Vec<EndpointId> = [&all, &typed, &channeled, &other]
            .into_iter()
            .filter(|ep| ep.app_id == m.app_id)
            .filter(|ep| match &new.only_endpoint {
                Some(only) => &ep.id == only,
                None => ep.wants(&m.event_type, m.channels.as_deref()),
            })
            .map(|ep| ep.id.clone())
            .collect();
        ids.sort();
        ids
    };
    let creates = news.iter().map(|new| {
        let (store, new) = (Arc::clone(&store), new.clone());
        Box::pin(async move { store.create_message(new).await }) as Task<'_, _>
    });
    let outcomes: Vec<crate::Result<crate::store::CreatedMessage>> =
        join_all(creates.collect()).await;

    for (new, outcome) in news.iter().zip(outcomes) {
        let mut endpoints = outcome.unwrap().endpoints;
        endpoints.sort();
        assert_eq!(endpoints, wanted(new), "{:?}", new.message);
        let m = &new.message;
        let stored = store.get_message(&m.app_id, m.id.as_str()).await.unwrap();
        assert_eq!(stored.channels, m.channels);
        assert_eq!(stored.headers, m.headers);
        assert_eq!(stored.payload, m.payload);
        assert_eq!(stored.event_type, m.event_type);
        let mut queued: Vec<EndpointId> = store
            .list_destinations(&m.app_id, &m.id, &first(10))
            .await
            .unwrap()
            .data
            .into_iter()
            .map(|(_, ep)| ep.id)
            .collect();
        queued.sort();
        assert_eq!(queued, endpoints, "a delivery for each endpoint it is for");
    }
}

/// Creates arriving together (a PostgreSQL group commit gathers them into one
/// transaction) each get their own answer: one message per `eventId`, a conflict for the
/// others, an idempotency key claimed once, and a create that cannot be stored (its
/// application is gone) fails alone, as `NotFound("application")`.
pub async fn concurrent_creates_each_get_their_own_answer(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    store
        .create_endpoint(&endpoint(&a.id, None, None))
        .await
        .unwrap();
    let now = clock_now();
    let record = |key: &str| IdempotencyRecord {
        key: key.into(),
        response: IdempotentResponse {
            status: 202,
            body: key.as_bytes().to_vec(),
        },
        expires_at: now + chrono::Duration::hours(1),
    };
    let mut news = Vec::new();
    for n in 0..60 {
        let mut m = message(&a.id, "a.b", None);
        m.event_id = Some(format!("evt-{}", n % 20));
        let mut new = new_message(m);
        // Each key twice, on creates of different event ids.
        if n < 10 {
            new.idempotency = Some(record(&format!("key-{}", n % 5)));
        }
        news.push(new);
    }
    let mut orphan = new_message(message(&AppId::new(), "a.b", None));
    orphan.idempotency = Some(record("key-orphan"));
    news.insert(30, orphan);
    let creates = news.into_iter().map(|new| {
        let store = Arc::clone(&store);
        Box::pin(async move { store.create_message(new).await }) as Task<'_, _>
    });
    let outcomes: Vec<crate::Result<crate::store::CreatedMessage>> =
        join_all(creates.collect()).await;

    assert!(
        matches!(outcomes[30], Err(crate::Error::NotFound("application"))),
        "the create of a missing application fails: {:?}",
        outcomes[30]
    );
    assert_eq!(
        store.get_idempotent("key-orphan", now).await.unwrap(),
        None,
        "and keeps no idempotency record"
    );
    let answered: Vec<&crate::Result<_>> = outcomes
        .iter()
        .enumerate()
        .filter(|(n, _)| *n != 30)
        .map(|(_, outcome)| outcome)
        .collect();
    let created = answered.iter().filter(|o| o.is_ok()).count();
    assert_eq!(created, 20, "one message per event id");
    for outcome in &answered {
        if let Err(error) = outcome {
            assert!(
                matches!(
                    error.code(),
                    crate::Code::Conflict | crate::Code::IdempotencyConflict
                ),
                "{error:?}"
            );
        }
    }
    let page = store
        .list_messages(&a.id, &Default::default(), &first(250))
        .await
        .unwrap();
    assert_eq!(page.data.len(), 20);
    for n in 0..20 {
        assert!(store.get_message(&a.id, &format!("evt-{n}")).await.is_ok());
    }
    for n in 0..5 {
        let kept = store
            .get_idempotent(&format!("key-{n}"), now)
            .await
            .unwrap();
        // A key is kept only with the message it answered: creates n and n + 5 carry it,
        // and one whose event id was taken gives it back.
        let answered = outcomes[n].is_ok() || outcomes[n + 5].is_ok();
        assert_eq!(kept.is_some(), answered, "key-{n}: {kept:?}");
    }
}
