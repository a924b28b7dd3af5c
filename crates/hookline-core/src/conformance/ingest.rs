//! Sources and their request log.

use super::*;

pub async fn sources_round_trip_and_hide_their_app(store: Arc<dyn Store>) {
    let visible = app(None);
    store.create_app(&visible).await.unwrap();
    let created = source(Some("stripe"));
    store.create_source(&created).await.unwrap();
    assert_eq!(
        store.get_source(created.id.as_str()).await.unwrap(),
        created
    );
    assert_eq!(store.get_source("stripe").await.unwrap(), created);

    let mut same_uid = source(Some("stripe"));
    same_uid.name = "Other".into();
    assert!(matches!(
        store.create_source(&same_uid).await,
        Err(Error::Conflict { .. })
    ));
    assert!(
        matches!(
            store.get_app(same_uid.app_id.as_str()).await,
            Err(Error::NotFound(_))
        ),
        "a refused source leaves no hidden application behind"
    );

    // The hidden application: found by id, never listed, holds endpoints, names its source.
    assert_eq!(
        store.source_of_app(&created.app_id).await.unwrap(),
        Some(created.id.clone())
    );
    assert_eq!(store.source_of_app(&visible.id).await.unwrap(), None);
    let hidden = store.get_app(created.app_id.as_str()).await.unwrap();
    assert_eq!(hidden, created.hidden_app());
    assert_eq!((hidden.name.as_str(), hidden.uid), ("source Stripe", None));
    let listed = store.list_apps(&first(10)).await.unwrap();
    assert_eq!(listed.data, vec![visible.clone()]);
    let ep = endpoint(&created.app_id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    assert_eq!(
        store
            .list_endpoints(&created.app_id, &first(10))
            .await
            .unwrap()
            .data,
        vec![ep]
    );
    assert!(
        matches!(
            store.delete_app(&created.app_id).await,
            Err(Error::Conflict { .. })
        ),
        "a source's application goes with the source only"
    );

    let other = source(None);
    store.create_source(&other).await.unwrap();
    let page = store.list_sources(&first(1)).await.unwrap();
    assert_eq!(page.data.len(), 1);
    assert!(!page.done);
    let next = ListQuery {
        limit: 10,
        cursor: Some(Cursor::parse(page.iterator.as_deref().unwrap())),
        order: Order::Ascending,
    };
    let rest = store.list_sources(&next).await.unwrap();
    assert!(rest.done);
    let mut ids: Vec<SourceId> = page
        .data
        .iter()
        .chain(&rest.data)
        .map(|s| s.id.clone())
        .collect();
    let mut expected = vec![created.id.clone(), other.id.clone()];
    expected.sort();
    assert_eq!(ids, expected, "sources page in id order");
    ids.dedup();
    assert_eq!(ids.len(), 2);

    let mut updated = created.clone();
    updated.uid = Some("stripe-eu".into());
    updated.name = "Stripe EU".into();
    updated.source_type = "stripe-v2".into();
    updated.config = serde_json::json!({"secret": "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"});
    updated.metadata = BTreeMap::new();
    updated.previous_token = Some(created.token.clone());
    updated.previous_token_expires_at = Some(clock_now() + chrono::Duration::hours(1));
    updated.token = crate::id::random_base62(24);
    updated.updated_at = clock_now() + chrono::Duration::seconds(1);
    store.update_source(&updated).await.unwrap();
    assert_eq!(store.get_source("stripe-eu").await.unwrap(), updated);
    assert!(matches!(
        store.get_source("stripe").await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        store.get_app(created.app_id.as_str()).await.unwrap().name,
        "source Stripe EU",
        "the hidden application keeps the source's name"
    );
    let mut taken = other.clone();
    taken.uid = Some("stripe-eu".into());
    assert!(matches!(
        store.update_source(&taken).await,
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        store.update_source(&source(None)).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn sources_are_found_by_token_until_the_previous_one_expires(store: Arc<dyn Store>) {
    let now = clock_now();
    let mut rotated = source(None);
    rotated.previous_token = Some("old-token".into());
    rotated.previous_token_expires_at = Some(now + chrono::Duration::minutes(5));
    store.create_source(&rotated).await.unwrap();
    store.create_source(&source(None)).await.unwrap();

    let by_current = store
        .find_source_by_token(&rotated.token, now)
        .await
        .unwrap();
    assert_eq!(by_current.map(|s| s.id), Some(rotated.id.clone()));
    let by_previous = store.find_source_by_token("old-token", now).await.unwrap();
    assert_eq!(by_previous.map(|s| s.id), Some(rotated.id.clone()));
    let expiry = now + chrono::Duration::minutes(5);
    assert_eq!(
        store
            .find_source_by_token("old-token", expiry)
            .await
            .unwrap(),
        None,
        "the previous token is refused from its expiry on"
    );
    assert_eq!(
        store
            .find_source_by_token(&rotated.token, expiry + chrono::Duration::days(1))
            .await
            .unwrap()
            .map(|s| s.id),
        Some(rotated.id.clone()),
        "the current token does not expire"
    );
    assert_eq!(store.find_source_by_token("nope", now).await.unwrap(), None);
}

pub async fn accepted_requests_are_forwarded_and_duplicates_are_not(store: Arc<dyn Store>) {
    let src = source(None);
    store.create_source(&src).await.unwrap();
    let ep = endpoint(&src.app_id, None, None);
    store.create_endpoint(&ep).await.unwrap();

    let (new, m1) = forwarded(&src, received(&src, Some("evt_1")));
    let first_request = new.request.clone();
    let stored = store.ingest(new).await.unwrap();
    assert_eq!(stored.id, first_request.id);
    assert_eq!(stored.verdict, Verdict::Accepted);
    assert_eq!(stored.original, None);
    assert!(stored.seq > 0);
    assert_eq!(
        store.get_ingest_request(&src.id, &stored.id).await.unwrap(),
        IngestRequest {
            seq: stored.seq,
            ..first_request.clone()
        },
        "stored as received, body bytes and header order included"
    );
    assert_eq!(
        store
            .get_message(&src.app_id, m1.id.as_str())
            .await
            .unwrap(),
        m1
    );
    let destination = store
        .get_destination(&src.app_id, &m1.id, &ep.id)
        .await
        .unwrap();
    assert_eq!(destination.status, MessageStatus::Sending);
    assert!(destination.next_attempt.is_some());

    // The same key inside the window: logged as a duplicate, not forwarded.
    let (new, m2) = forwarded(&src, received(&src, Some("evt_1")));
    let duplicate = store.ingest(new).await.unwrap();
    assert_eq!(duplicate.verdict, Verdict::Duplicate);
    assert_eq!(duplicate.original, Some(first_request.id.clone()));
    assert!(duplicate.seq > stored.seq);
    let logged = store
        .get_ingest_request(&src.id, &duplicate.id)
        .await
        .unwrap();
    assert_eq!(logged.verdict, Verdict::Duplicate);
    assert_eq!(logged.reason_code, "duplicate");
    assert!(
        logged.reason.contains(first_request.id.as_str()),
        "{}",
        logged.reason
    );
    assert_eq!(logged.msg_id, None);
    assert!(matches!(
        store.get_message(&src.app_id, m2.id.as_str()).await,
        Err(Error::NotFound(_))
    ));

    // The same key once the window has moved past the first: forwarded again.
    let (mut new, m3) = forwarded(&src, received(&src, Some("evt_1")));
    new.dedupe_since = Some(first_request.created_at + chrono::Duration::milliseconds(1));
    let again = store.ingest(new).await.unwrap();
    assert_eq!((again.verdict, again.original), (Verdict::Accepted, None));
    assert_eq!(
        store
            .get_ingest_request(&src.id, &again.id)
            .await
            .unwrap()
            .msg_id,
        Some(m3.id.clone())
    );
    store
        .get_message(&src.app_id, m3.id.as_str())
        .await
        .unwrap();

    // Without a window, or without a key, nothing is deduplicated.
    let (mut new, _) = forwarded(&src, received(&src, Some("evt_1")));
    new.dedupe_since = None;
    assert_eq!(store.ingest(new).await.unwrap().verdict, Verdict::Accepted);
    let (new, _) = forwarded(&src, received(&src, None));
    assert_eq!(store.ingest(new).await.unwrap().verdict, Verdict::Accepted);

    // Another source's key is not this one's.
    let other = source(None);
    store.create_source(&other).await.unwrap();
    let (new, _) = forwarded(&other, received(&other, Some("evt_1")));
    assert_eq!(store.ingest(new).await.unwrap().verdict, Verdict::Accepted);

    let (new, _) = forwarded(&src, received(&source(None), None));
    assert!(
        matches!(store.ingest(new).await, Err(Error::NotFound(_))),
        "a request of an unknown source"
    );
    assert!(matches!(
        store.get_ingest_request(&other.id, &stored.id).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn concurrent_duplicates_are_forwarded_once(store: Arc<dyn Store>) {
    let src = source(None);
    store.create_source(&src).await.unwrap();
    let requests: Vec<_> = (0..8)
        .map(|_| forwarded(&src, received(&src, Some("evt_race"))).0)
        .collect();
    let outcomes: Vec<IngestedRequest> = join_all(
        requests
            .into_iter()
            .map(|new| {
                let store = Arc::clone(&store);
                Box::pin(async move { store.ingest(new).await.unwrap() }) as Task<'_, _>
            })
            .collect(),
    )
    .await;
    let accepted: Vec<_> = outcomes
        .iter()
        .filter(|outcome| outcome.verdict == Verdict::Accepted)
        .collect();
    assert_eq!(accepted.len(), 1, "{outcomes:?}");
    for outcome in &outcomes {
        if outcome.verdict == Verdict::Duplicate {
            assert_eq!(outcome.original.as_ref(), Some(&accepted[0].id));
        }
    }
    let messages = store
        .list_messages(&src.app_id, &MessageFilter::default(), &first(20))
        .await
        .unwrap();
    assert_eq!(messages.data.len(), 1);
}

pub async fn a_request_of_a_missing_source_fails_alone(store: Arc<dyn Store>) {
    let (src, gone) = (source(None), source(None));
    store.create_source(&src).await.unwrap();
    // Arriving together, a store that gathers writes may well carry them out together.
    let outcomes: Vec<crate::Result<IngestedRequest>> = join_all(
        (0..8)
            .map(|n| {
                let store = Arc::clone(&store);
                let to = if n % 2 == 0 { &src } else { &gone };
                let new = forwarded(to, received(to, Some(&format!("evt_{n}")))).0;
                Box::pin(async move { store.ingest(new).await }) as Task<'_, _>
            })
            .collect(),
    )
    .await;
    for (n, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Ok(stored) => assert!(n % 2 == 0 && stored.logged, "{n}: {stored:?}"),
            Err(error) => assert!(
                n % 2 == 1 && matches!(error, Error::NotFound("source")),
                "{n}: {error:?}"
            ),
        }
    }
    let logged = store
        .ingest_requests_after(&src.id, 0, 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!(logged.len(), 4);
    let messages = store
        .list_messages(&src.app_id, &MessageFilter::default(), &first(20))
        .await
        .unwrap();
    assert_eq!(messages.data.len(), 4, "each logged request forwarded once");
}

/// Requests arriving together each forward their own message; one whose message cannot
/// be created (its `eventId` taken) fails alone and leaves nothing logged, while the others
/// are logged and forwarded (a store that writes a batch's messages together carries
/// that batch out again one request at a time).
pub async fn a_request_whose_message_conflicts_fails_alone(store: Arc<dyn Store>) {
    let src = source(None);
    store.create_source(&src).await.unwrap();
    let with_event = |key: &str, event: &str| {
        let (mut new, _) = forwarded(&src, received(&src, Some(key)));
        new.messages[0].message.event_id = Some(event.into());
        new
    };
    store
        .ingest(with_event("evt_first", "taken"))
        .await
        .unwrap();
    let outcomes: Vec<crate::Result<IngestedRequest>> = join_all(
        (0..6)
            .map(|n| {
                let store = Arc::clone(&store);
                let event = if n == 3 {
                    "taken".into()
                } else {
                    format!("event-{n}")
                };
                let new = with_event(&format!("evt_{n}"), &event);
                Box::pin(async move { store.ingest(new).await }) as Task<'_, _>
            })
            .collect(),
    )
    .await;
    for (n, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Ok(stored) => assert!(n != 3 && stored.logged, "{n}: {stored:?}"),
            Err(error) => assert!(
                n == 3 && error.code() == crate::Code::Conflict,
                "{n}: {error:?}"
            ),
        }
    }
    let logged = store
        .ingest_requests_after(&src.id, 0, 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!(logged.len(), 6, "the first request and five of the six");
    let messages = store
        .list_messages(&src.app_id, &MessageFilter::default(), &first(20))
        .await
        .unwrap();
    assert_eq!(messages.data.len(), 6);
}

pub async fn rejected_requests_are_logged_without_a_message(store: Arc<dyn Store>) {
    let src = source(None);
    store.create_source(&src).await.unwrap();
    store
        .create_endpoint(&endpoint(&src.app_id, None, None))
        .await
        .unwrap();
    let (accepted, _) = forwarded(&src, received(&src, Some("evt_1")));
    store.ingest(accepted).await.unwrap();

    let mut request = received(&src, Some("evt_1"));
    request.verdict = Verdict::Rejected;
    request.status_code = 401;
    request.reason_code = "no_signature_matched".into();
    request.reason = "no signature matched".into();
    let (mut new, message) = forwarded(&src, request.clone());
    new.request.msg_id = None;
    let stored = store.ingest(new).await.unwrap();
    assert_eq!(
        (stored.verdict, stored.original),
        (Verdict::Rejected, None),
        "a rejected request is never a duplicate"
    );
    let logged = store.get_ingest_request(&src.id, &stored.id).await.unwrap();
    assert_eq!(
        logged,
        IngestRequest {
            seq: stored.seq,
            ..request
        }
    );
    assert!(matches!(
        store.get_message(&src.app_id, message.id.as_str()).await,
        Err(Error::NotFound(_))
    ));
    let messages = store
        .list_messages(&src.app_id, &MessageFilter::default(), &first(10))
        .await
        .unwrap();
    assert_eq!(messages.data.len(), 1, "only the accepted request's");
}

pub async fn requests_are_numbered_per_source_in_order(store: Arc<dyn Store>) {
    let (a, b) = (source(None), source(None));
    store.create_source(&a).await.unwrap();
    store.create_source(&b).await.unwrap();
    let mut seqs = Vec::new();
    for _ in 0..3 {
        seqs.push(
            store
                .ingest(forwarded(&a, received(&a, None)).0)
                .await
                .unwrap()
                .seq,
        );
        store
            .ingest(forwarded(&b, received(&b, None)).0)
            .await
            .unwrap();
    }
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");

    // Requests arriving together get distinct numbers too.
    let together: Vec<i64> = join_all(
        (0..6)
            .map(|_| {
                let store = Arc::clone(&store);
                let new = forwarded(&a, received(&a, None)).0;
                Box::pin(async move { store.ingest(new).await.unwrap().seq }) as Task<'_, _>
            })
            .collect(),
    )
    .await;
    assert!(together.iter().all(|seq| *seq > seqs[2]), "{together:?}");
    seqs.extend(together);
    let mut distinct = seqs.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 9);

    let all = store
        .ingest_requests_after(&a.id, 0, 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!(all.len(), 9);
    assert!(all.iter().all(|request| request.source_id == a.id));
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), distinct);
    let cursor = all[3].seq;
    let after = store
        .ingest_requests_after(&a.id, cursor, 2, usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        after.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![all[4].seq, all[5].seq]
    );
    assert!(
        store
            .ingest_requests_after(&a.id, all[8].seq, 10, usize::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .ingest_requests_after(&b.id, 0, 100, usize::MAX)
            .await
            .unwrap()
            .len(),
        3
    );

    // The log pages by id, both ways.
    let mut ids: Vec<IngestRequestId> = all.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    let page = store
        .list_ingest_requests(&a.id, &first(5), usize::MAX)
        .await
        .unwrap();
    assert!(!page.done);
    let next = ListQuery {
        limit: 5,
        cursor: Some(Cursor::parse(page.iterator.as_deref().unwrap())),
        order: Order::Ascending,
    };
    let rest = store
        .list_ingest_requests(&a.id, &next, usize::MAX)
        .await
        .unwrap();
    assert!(rest.done);
    let walked: Vec<IngestRequestId> = page
        .data
        .iter()
        .chain(&rest.data)
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(walked, ids);
    let newest = store
        .list_ingest_requests(&a.id, &ListQuery::first(1, Order::Descending), usize::MAX)
        .await
        .unwrap();
    assert_eq!(newest.data[0].id, ids[8]);
}

pub async fn message_headers_round_trip(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let ep = endpoint(&a.id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    let mut m = message(&a.id, "a.b", None);
    m.headers = BTreeMap::from([
        ("content-type".into(), "text/plain; charset=utf-8".into()),
        ("x-github-event".into(), "push".into()),
    ]);
    store.create_message(new_message(m.clone())).await.unwrap();
    let plain = message(&a.id, "a.b", None);
    store
        .create_message(new_message(plain.clone()))
        .await
        .unwrap();
    assert_eq!(store.get_message(&a.id, m.id.as_str()).await.unwrap(), m);
    assert_eq!(
        store.get_message(&a.id, plain.id.as_str()).await.unwrap(),
        plain
    );
    let listed = store
        .list_messages(&a.id, &MessageFilter::default(), &first(10))
        .await
        .unwrap();
    assert!(listed.data.contains(&m));
    let jobs = store
        .claim_due(
            "n",
            clock_now() + chrono::Duration::seconds(1),
            Duration::from_secs(30),
            10,
        )
        .await
        .unwrap();
    let job = jobs
        .iter()
        .find(|job| job.message.id == m.id)
        .expect("claimed");
    assert_eq!(job.message.headers, m.headers, "deliveries see the headers");
}

pub async fn purging_the_log_deletes_only_old_requests(store: Arc<dyn Store>) {
    let src = source(None);
    store.create_source(&src).await.unwrap();
    let now = clock_now();
    let mut old = received(&src, None);
    old.created_at = now - chrono::Duration::days(10);
    let mut edge = received(&src, None);
    edge.created_at = now - chrono::Duration::days(7);
    let recent = received(&src, None);
    for request in [&old, &edge, &recent] {
        let (mut new, _) = forwarded(&src, request.clone());
        new.messages.clear();
        new.request.msg_id = None;
        store.ingest(new).await.unwrap();
    }
    let purged = store
        .purge_ingest_requests(now - chrono::Duration::days(7))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert!(matches!(
        store.get_ingest_request(&src.id, &old.id).await,
        Err(Error::NotFound(_))
    ));
    store.get_ingest_request(&src.id, &edge.id).await.unwrap();
    let last = store
        .get_ingest_request(&src.id, &recent.id)
        .await
        .unwrap()
        .seq;

    // Emptied by retention, the log numbers on from where it was: a stream's cursor
    // stays valid.
    assert_eq!(
        store
            .purge_ingest_requests(now + chrono::Duration::seconds(1))
            .await
            .unwrap(),
        2
    );
    let next = store
        .ingest(forwarded(&src, received(&src, None)).0)
        .await
        .unwrap();
    assert!(next.seq > last, "{} > {last}", next.seq);
    assert_eq!(
        store
            .ingest_requests_after(&src.id, last, 10, usize::MAX)
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn deleting_a_source_removes_its_app_and_log(store: Arc<dyn Store>) {
    let src = source(Some("gone"));
    store.create_source(&src).await.unwrap();
    let kept = source(None);
    store.create_source(&kept).await.unwrap();
    let ep = endpoint(&src.app_id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    let (new, m) = forwarded(&src, received(&src, None));
    let logged = store.ingest(new).await.unwrap();
    let kept_logged = store
        .ingest(forwarded(&kept, received(&kept, None)).0)
        .await
        .unwrap();

    store.delete_source(&src.id).await.unwrap();
    assert!(matches!(
        store.get_source("gone").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.get_app(src.app_id.as_str()).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.get_endpoint(&src.app_id, ep.id.as_str()).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.get_message(&src.app_id, m.id.as_str()).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.get_ingest_request(&src.id, &logged.id).await,
        Err(Error::NotFound(_))
    ));
    assert!(
        store
            .claim_due(
                "n",
                clock_now() + chrono::Duration::seconds(5),
                Duration::from_secs(30),
                10
            )
            .await
            .unwrap()
            .iter()
            .all(|job| job.message.app_id != src.app_id)
    );
    assert!(matches!(
        store.delete_source(&src.id).await,
        Err(Error::NotFound(_))
    ));
    store.get_source(kept.id.as_str()).await.unwrap();
    store.get_app(kept.app_id.as_str()).await.unwrap();
    store
        .get_ingest_request(&kept.id, &kept_logged.id)
        .await
        .unwrap();
}

pub async fn a_source_deleted_while_requests_arrive_leaves_nothing_behind(store: Arc<dyn Store>) {
    let src = source(None);
    store.create_source(&src).await.unwrap();
    store
        .create_endpoint(&endpoint(&src.app_id, None, None))
        .await
        .unwrap();
    let mut work: Vec<Task<'_, Result<(), Error>>> = (0..6)
        .map(|n| {
            let store = Arc::clone(&store);
            let key = format!("evt_{n}");
            let new = forwarded(&src, received(&src, Some(&key))).0;
            Box::pin(async move { store.ingest(new).await.map(drop) }) as Task<'_, _>
        })
        .collect();
    let deleter = Arc::clone(&store);
    let id = src.id.clone();
    work.insert(3, Box::pin(async move { deleter.delete_source(&id).await }));
    for (n, outcome) in join_all(work).await.into_iter().enumerate() {
        assert!(
            matches!(outcome, Ok(()) | Err(Error::NotFound(_))),
            "step {n}: {outcome:?}"
        );
    }
    assert!(matches!(
        store.get_source(src.id.as_str()).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.get_app(src.app_id.as_str()).await,
        Err(Error::NotFound(_))
    ));
    assert!(
        store
            .ingest_requests_after(&src.id, 0, 100, usize::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_messages(&src.app_id, &MessageFilter::default(), &first(10))
            .await
            .unwrap()
            .data
            .is_empty()
    );
}

/// A refused request of `source` received `secs` into the minute starting at `minute`.
fn refused_at(source: &Source, minute: DateTime<Utc>, secs: i64) -> NewIngestRequest {
    let mut request = received(source, None);
    request.verdict = Verdict::Rejected;
    request.status_code = 401;
    request.reason_code = "no_signature_matched".into();
    request.reason = "no signature matched".into();
    request.created_at = minute + chrono::Duration::seconds(secs);
    let (mut new, _) = forwarded(source, request);
    new.request.msg_id = None;
    new.messages.clear();
    new.dedupe_since = None;
    new.refused_cap = Some(crate::ingest::RefusedCap {
        per_window: 2,
        window: Duration::from_secs(60),
    });
    new
}

pub async fn refused_requests_over_the_cap_are_counted_not_logged(store: Arc<dyn Store>) {
    let (src, other) = (source(None), source(None));
    store.create_source(&src).await.unwrap();
    store.create_source(&other).await.unwrap();
    let minute = DateTime::from_timestamp(clock_now().timestamp() / 60 * 60, 0).unwrap();

    let mut outcomes = Vec::new();
    for secs in 0..5 {
        outcomes.push(store.ingest(refused_at(&src, minute, secs)).await.unwrap());
    }
    let logged: Vec<bool> = outcomes.iter().map(|o| o.logged).collect();
    assert_eq!(logged, [true, true, false, false, false], "two a minute");
    assert_eq!(
        outcomes.iter().map(|o| o.dropped).collect::<Vec<_>>(),
        [0, 0, 1, 2, 3],
        "those not logged are counted"
    );
    assert_eq!(outcomes[2].seq, 0);
    // Another source has its own count; accepted requests are never capped.
    assert!(
        store
            .ingest(refused_at(&other, minute, 1))
            .await
            .unwrap()
            .logged
    );
    let mut accepted = refused_at(&src, minute, 6);
    accepted.request.verdict = Verdict::Accepted;
    assert!(store.ingest(accepted).await.unwrap().logged);

    // The next minute logs again, its first entry saying how many were skipped.
    let next = store.ingest(refused_at(&src, minute, 61)).await.unwrap();
    assert_eq!((next.logged, next.dropped), (true, 3));
    let entry = store.get_ingest_request(&src.id, &next.id).await.unwrap();
    assert_eq!(entry.dropped_before, 3);
    assert_eq!(entry.body_size, 16);
    let log = store
        .ingest_requests_after(&src.id, 0, 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!(log.len(), 4, "two refused, one accepted, one refused");
    assert!(
        log.iter().all(|request| request.id != outcomes[2].id),
        "a request over the cap leaves no entry"
    );

    // Requests arriving together (on several nodes) count into one cap.
    let minute = minute + chrono::Duration::minutes(2);
    let together: Vec<IngestedRequest> = join_all(
        (0..6)
            .map(|secs| {
                let store = Arc::clone(&store);
                let new = refused_at(&src, minute, secs);
                Box::pin(async move { store.ingest(new).await.unwrap() }) as Task<'_, _>
            })
            .collect(),
    )
    .await;
    assert_eq!(together.iter().filter(|o| o.logged).count(), 2);
    let mut dropped: Vec<i64> = together
        .iter()
        .filter(|o| !o.logged)
        .map(|o| o.dropped)
        .collect();
    dropped.sort();
    assert_eq!(dropped, [1, 2, 3, 4]);
}

pub async fn log_reads_stop_at_their_body_budget(store: Arc<dyn Store>) {
    let src = source(None);
    store.create_source(&src).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..5u8 {
        let mut request = received(&src, None);
        request.body = vec![b'a' + n; 100];
        request.body_size = 100;
        let (mut new, _) = forwarded(&src, request);
        new.messages.clear();
        new.request.msg_id = None;
        ids.push(store.ingest(new).await.unwrap().id);
        tokio_free_sleep_ms(2);
    }

    // Pages of at most 250 bytes of bodies: two requests each, the last one alone.
    let mut query = first(10);
    let mut walked = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let page = store
            .list_ingest_requests(&src.id, &query, 250)
            .await
            .unwrap();
        sizes.push(page.data.len());
        assert!(page.data.iter().map(|r| r.body.len()).sum::<usize>() <= 250);
        walked.extend(page.data.iter().map(|r| r.id.clone()));
        if page.done {
            break;
        }
        query.cursor = Some(Cursor::parse(page.iterator.as_deref().unwrap()));
    }
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(walked, ids, "every request once, in order");

    // Backwards from the end: the requests next to the cursor come first.
    let back = ListQuery {
        limit: 10,
        cursor: Some(Cursor::parse(&format!("-{}", ids[4]))),
        order: Order::Ascending,
    };
    let page = store
        .list_ingest_requests(&src.id, &back, 250)
        .await
        .unwrap();
    let got: Vec<_> = page.data.iter().map(|r| r.id.clone()).collect();
    assert_eq!(got, ids[2..4]);
    assert!(!page.done);

    // A budget smaller than one body still moves on, a request at a time.
    let one = store
        .list_ingest_requests(&src.id, &first(10), 0)
        .await
        .unwrap();
    assert_eq!(one.data.len(), 1);
    assert!(!one.done);

    // Streams read the same way.
    let mut after = 0;
    let mut streamed = Vec::new();
    loop {
        let read = store
            .ingest_requests_after(&src.id, after, 100, 250)
            .await
            .unwrap();
        if read.is_empty() {
            break;
        }
        assert!(read.len() <= 2);
        after = read.last().unwrap().seq;
        streamed.extend(read.into_iter().map(|r| r.id));
    }
    assert_eq!(streamed, ids);
}

/// A forwarded request's messages lease their deliveries as a create does: the answer
/// hands them back ready to make, counts the rest as queued for a claim, and a duplicate
/// leases nothing.
pub async fn a_forwarded_request_under_a_lease_hands_back_its_deliveries(store: Arc<dyn Store>) {
    let src = source(None);
    store.create_source(&src).await.unwrap();
    let mut endpoints = Vec::new();
    for _ in 0..2 {
        let ep = endpoint(&src.app_id, None, None);
        store.create_endpoint(&ep).await.unwrap();
        endpoints.push(ep);
    }
    let until = clock_now() + chrono::Duration::seconds(30);
    let leased = |request: IngestRequest| {
        let (mut new, message) = forwarded(&src, request);
        new.messages[0].lease = Some(CreateLease {
            owner: "node-a".into(),
            until,
            most: 1,
        });
        (new, message)
    };

    let (new, m) = leased(received(&src, Some("evt_lease")));
    let stored = store.ingest(new).await.unwrap();
    assert_eq!(stored.verdict, Verdict::Accepted);
    assert_eq!(stored.leased.len(), 1, "no more than the lease's room");
    assert_eq!(stored.queued, 1);
    let job = &stored.leased[0];
    assert_eq!(*job.message, m);
    let stored_endpoint = endpoints
        .iter()
        .find(|ep| ep.id == job.endpoint.id)
        .unwrap();
    assert_eq!(*job.endpoint, *stored_endpoint);
    assert_eq!(
        job.destination.next_attempt.map(|t| t.timestamp_millis()),
        Some(until.timestamp_millis())
    );
    let now = clock_now() + chrono::Duration::seconds(1);
    let claimed = store
        .claim_due("node-b", now, Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "only the delivery left out of the lease");
    assert_ne!(claimed[0].endpoint.id, job.endpoint.id);

    let (new, _) = leased(received(&src, Some("evt_lease")));
    let again = store.ingest(new).await.unwrap();
    assert_eq!(again.verdict, Verdict::Duplicate);
    assert!(again.leased.is_empty());
    assert_eq!(again.queued, 0);

    let (new, _) = forwarded(&src, received(&src, None));
    let plain = store.ingest(new).await.unwrap();
    assert!(plain.leased.is_empty());
    assert_eq!(plain.queued, 2);
}

/// Requests arriving together, which a store may write in one batch (some leased, some
/// duplicates, some refused, some without a lease): each answer hands back its own
/// message's deliveries and no other's.
pub async fn requests_written_together_each_hand_back_their_own_deliveries(store: Arc<dyn Store>) {
    let src = source(None);
    store.create_source(&src).await.unwrap();
    store
        .create_endpoint(&endpoint(&src.app_id, None, None))
        .await
        .unwrap();
    let lease = CreateLease {
        owner: "node-a".into(),
        until: clock_now() + chrono::Duration::seconds(30),
        most: 4,
    };
    // (request, its message, leased, refused), in arrival order.
    let mut requests = Vec::new();
    for n in 0..12 {
        let key = format!("evt_{}", n % 8); // The last four repeat the first four.
        let mut request = received(&src, Some(&key));
        let refused = n % 5 == 3;
        if refused {
            request.verdict = Verdict::Rejected;
            request.status_code = 401;
            request.reason_code = "no_signature_matched".into();
        }
        let (mut new, message) = forwarded(&src, request);
        let leased = n % 3 != 2;
        if leased {
            new.messages[0].lease = Some(lease.clone());
        }
        requests.push((new, message, leased, refused));
    }
    let expected: Vec<(Message, bool)> = requests
        .iter()
        .map(|(_, message, leased, _)| (message.clone(), *leased))
        .collect();
    let outcomes: Vec<IngestedRequest> = join_all(
        requests
            .into_iter()
            .map(|(new, ..)| {
                let store = Arc::clone(&store);
                Box::pin(async move { store.ingest(new).await.unwrap() }) as Task<'_, _>
            })
            .collect(),
    )
    .await;
    let mut handed = 0;
    for (outcome, (message, leased)) in outcomes.iter().zip(&expected) {
        match outcome.verdict {
            Verdict::Accepted if *leased => {
                assert_eq!(outcome.leased.len(), 1, "{outcome:?}");
                assert_eq!(*outcome.leased[0].message, *message, "its own message");
                assert_eq!(outcome.queued, 0);
                handed += 1;
            }
            Verdict::Accepted => {
                assert!(outcome.leased.is_empty(), "{outcome:?}");
                assert_eq!(outcome.queued, 1);
            }
            _ => {
                assert!(outcome.leased.is_empty(), "{outcome:?}");
                assert_eq!(outcome.queued, 0);
            }
        }
    }
    assert!(handed > 0);
    // Every forward is in the queue once: leased, or due.
    let now = clock_now() + chrono::Duration::seconds(1);
    let due = store
        .claim_due("node-b", now, Duration::from_secs(60), 100)
        .await
        .unwrap();
    let accepted = outcomes
        .iter()
        .filter(|outcome| outcome.verdict == Verdict::Accepted)
        .count();
    assert_eq!(due.len() + handed, accepted);
}
