//! Applications, endpoints and event types.

use super::*;

pub async fn applications_round_trip_and_conflict_on_uid(store: Arc<dyn Store>) {
    let created = app(Some("acme"));
    store.create_app(&created).await.unwrap();
    assert_eq!(store.get_app(created.id.as_str()).await.unwrap(), created);
    assert_eq!(store.get_app("acme").await.unwrap().id, created.id);
    assert!(matches!(
        store.create_app(&app(Some("acme"))).await,
        Err(Error::Conflict { .. })
    ));
    let mut renamed = created.clone();
    renamed.name = "Acme 2".into();
    renamed.uid = None;
    store.update_app(&renamed).await.unwrap();
    assert_eq!(
        store.get_app(created.id.as_str()).await.unwrap().name,
        "Acme 2"
    );
    assert!(matches!(
        store.get_app("acme").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.update_app(&app(None)).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn pagination_walks_both_ways(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        let a = app(None);
        store.create_app(&a).await.unwrap();
        ids.push(a.id.to_string());
        tokio_free_sleep_ms(2);
    }
    let page = store.list_apps(&first(2)).await.unwrap();
    assert_eq!(
        page.data
            .iter()
            .map(|a| a.id.to_string())
            .collect::<Vec<_>>(),
        ids[..2]
    );
    assert!(!page.done);
    let next = ListQuery {
        limit: 2,
        cursor: Some(Cursor::parse(page.iterator.as_deref().unwrap())),
        order: Order::Ascending,
    };
    let page2 = store.list_apps(&next).await.unwrap();
    assert_eq!(page2.data[0].id.to_string(), ids[2]);
    let back = ListQuery {
        limit: 2,
        cursor: Some(Cursor::parse(page2.prev_iterator.as_deref().unwrap())),
        order: Order::Ascending,
    };
    let page_back = store.list_apps(&back).await.unwrap();
    assert_eq!(
        page_back
            .data
            .iter()
            .map(|a| a.id.to_string())
            .collect::<Vec<_>>(),
        ids[..2]
    );
    let newest = store
        .list_apps(&ListQuery::first(10, Order::Descending))
        .await
        .unwrap();
    assert_eq!(newest.data[0].id.to_string(), ids[4]);
    assert!(newest.done);
    assert_eq!(newest.data.len(), 5);
}

pub async fn endpoints_are_scoped_to_their_app(store: Arc<dyn Store>) {
    let (a, b) = (app(None), app(None));
    store.create_app(&a).await.unwrap();
    store.create_app(&b).await.unwrap();
    let mut ep = endpoint(&a.id, Some(&["a.b"]), None);
    ep.uid = Some("main".into());
    store.create_endpoint(&ep).await.unwrap();
    assert_eq!(store.get_endpoint(&a.id, "main").await.unwrap(), ep);
    assert!(matches!(
        store.get_endpoint(&b.id, ep.id.as_str()).await,
        Err(Error::NotFound(_))
    ));
    let mut same_uid = endpoint(&a.id, None, None);
    same_uid.uid = Some("main".into());
    assert!(matches!(
        store.create_endpoint(&same_uid).await,
        Err(Error::Conflict { .. })
    ));
    let mut other_app = endpoint(&b.id, None, None);
    other_app.uid = Some("main".into());
    store.create_endpoint(&other_app).await.unwrap();

    ep.disabled = true;
    ep.secrets.push(EndpointSecret {
        key: "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        expires_at: Some(clock_now()),
    });
    store.update_endpoint(&ep, true).await.unwrap();
    let read = store.get_endpoint(&a.id, ep.id.as_str()).await.unwrap();
    assert!(read.disabled);
    assert_eq!(read.secrets.len(), 2);

    // failing_since is the engine's: a settings write keeps it, re-enabling clears it.
    let m = message(&a.id, "a.b", None);
    store.create_message(new_message(m.clone())).await.unwrap();
    let mut exhausted = outcome(&m, &ep.id, MessageStatus::Fail, None, 500);
    exhausted.endpoint_failing = Some(true);
    store.record_outcomes(vec![exhausted].into()).await.unwrap();
    let mut stale = read.clone();
    stale.description = "renamed".into();
    store.update_endpoint(&stale, false).await.unwrap();
    let failing = store.get_endpoint(&a.id, ep.id.as_str()).await.unwrap();
    assert!(
        failing.failing_since.is_some(),
        "a stale copy does not undo the engine's write"
    );
    stale.disabled = false;
    store.update_endpoint(&stale, false).await.unwrap();
    let untouched = store.get_endpoint(&a.id, ep.id.as_str()).await.unwrap();
    assert!(
        untouched.disabled && untouched.failing_since.is_some(),
        "a write that does not set `disabled` leaves it as the engine put it"
    );
    store.update_endpoint(&stale, true).await.unwrap();
    let enabled = store.get_endpoint(&a.id, ep.id.as_str()).await.unwrap();
    assert_eq!((enabled.disabled, enabled.failing_since), (false, None));
    let listed = store.list_endpoints(&a.id, &first(10)).await.unwrap();
    assert_eq!(listed.data.len(), 1);
    store.delete_endpoint(&a.id, &ep.id).await.unwrap();
    assert!(matches!(
        store.delete_endpoint(&a.id, &ep.id).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn deleting_an_endpoint_removes_its_deliveries_even_as_messages_arrive(
    store: Arc<dyn Store>,
) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let (gone, kept) = (endpoint(&a.id, None, None), endpoint(&a.id, None, None));
    store.create_endpoint(&gone).await.unwrap();
    store.create_endpoint(&kept).await.unwrap();
    let before = message(&a.id, "a.b", None);
    store
        .create_message(new_message(before.clone()))
        .await
        .unwrap();

    // Creates arrive while the endpoint is deleted: each queues a delivery to it or
    // not, and none outlives the deletion.
    let messages: Vec<Message> = (0..24).map(|_| message(&a.id, "a.b", None)).collect();
    let creates = join_all(
        messages
            .iter()
            .map(|m| {
                let store = Arc::clone(&store);
                let new = new_message(m.clone());
                Box::pin(async move {
                    store.create_message(new).await.unwrap();
                }) as Task<'_, _>
            })
            .chain(std::iter::once({
                let store = Arc::clone(&store);
                let (app, id) = (a.id.clone(), gone.id.clone());
                Box::pin(async move {
                    store.delete_endpoint(&app, &id).await.unwrap();
                }) as Task<'_, _>
            }))
            .collect(),
    );
    creates.await;
    for m in messages.iter().chain([&before]) {
        assert!(
            matches!(
                store.get_destination(&a.id, &m.id, &gone.id).await,
                Err(Error::NotFound(_))
            ),
            "{}: a delivery to the deleted endpoint",
            m.id
        );
        store.get_destination(&a.id, &m.id, &kept.id).await.unwrap();
    }
    let due = store
        .claim_due(
            "node",
            clock_now() + chrono::Duration::seconds(1),
            std::time::Duration::from_secs(30),
            100,
        )
        .await
        .unwrap();
    assert_eq!(due.len(), 25);
    assert!(due.iter().all(|job| job.endpoint.id == kept.id));
}

pub async fn event_types_archive_and_conflict(store: Arc<dyn Store>) {
    let now = clock_now();
    let mut et = EventType {
        name: "invoice.paid".into(),
        description: "paid".into(),
        archived: false,
        deprecated: false,
        schemas: Some(serde_json::json!({"1": {"type": "object"}})),
        feature_flag: None,
        created_at: now,
        updated_at: now,
    };
    store.create_event_type(&et).await.unwrap();
    match store.create_event_type(&et).await {
        Err(Error::Conflict { code, .. }) => assert_eq!(code, crate::Code::EventTypeExists),
        other => panic!("expected a conflict, got {other:?}"),
    }
    et.archived = true;
    store.update_event_type(&et).await.unwrap();
    assert!(
        store
            .list_event_types(&first(10), false)
            .await
            .unwrap()
            .data
            .is_empty()
    );
    let all = store.list_event_types(&first(10), true).await.unwrap();
    assert_eq!(all.data, vec![et.clone()]);
    store.delete_event_type("invoice.paid").await.unwrap();
    assert!(matches!(
        store.get_event_type("invoice.paid").await,
        Err(Error::NotFound(_))
    ));
}

pub async fn deleting_an_app_removes_its_resources(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let ep = endpoint(&a.id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    let m = message(&a.id, "a.b", None);
    store.create_message(new_message(m.clone())).await.unwrap();
    // One attempt failed; the delivery waits for its retry.
    let now = clock_now() + chrono::Duration::seconds(1);
    let lease = Duration::from_secs(30);
    assert_eq!(store.claim_due("n", now, lease, 10).await.unwrap().len(), 1);
    let retry = now + chrono::Duration::seconds(1);
    let failed = outcome(&m, &ep.id, MessageStatus::Fail, Some(retry), 500);
    let attempt = failed.attempt.id.clone();
    store.record_outcomes(vec![failed].into()).await.unwrap();
    store.delete_app(&a.id).await.unwrap();
    assert!(matches!(
        store.get_app(a.id.as_str()).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.get_message(&a.id, m.id.as_str()).await,
        Err(Error::NotFound(_))
    ));
    let later = clock_now() + chrono::Duration::seconds(5);
    assert!(
        store
            .claim_due("n", later, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Nothing of it is left behind: no delivery is queued, and the application and its
    // endpoint created again under the same ids start empty.
    let queue = store.queue_depth(later).await.unwrap();
    assert_eq!(queue.due + queue.leased + queue.scheduled, 0, "{queue:?}");
    store.create_app(&a).await.unwrap();
    store.create_endpoint(&ep).await.unwrap();
    let messages = store
        .list_messages(&a.id, &MessageFilter::default(), &first(10))
        .await
        .unwrap();
    assert!(messages.data.is_empty(), "{:?}", messages.data);
    let attempts = store
        .list_attempts(&a.id, &AttemptFilter::default(), &first(10))
        .await
        .unwrap();
    assert!(attempts.data.is_empty(), "{:?}", attempts.data);
    assert!(matches!(
        store.get_attempt(&a.id, &m.id, &attempt).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.get_destination(&a.id, &m.id, &ep.id).await,
        Err(Error::NotFound(_))
    ));
    assert!(
        store
            .claim_due("n", later, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
