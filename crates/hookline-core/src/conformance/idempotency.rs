//! Idempotency records.

use super::*;

pub async fn idempotency_commits_with_the_message(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let now = clock_now();
    let record = IdempotencyRecord {
        key: "k1".into(),
        response: IdempotentResponse {
            status: 202,
            body: b"{\"id\":1}".to_vec(),
        },
        expires_at: now + chrono::Duration::hours(12),
    };
    let new = NewMessage {
        idempotency: Some(record.clone()),
        ..new_message(message(&a.id, "a.b", None))
    };
    store.create_message(new).await.unwrap();
    assert_eq!(
        store.get_idempotent("k1", now).await.unwrap(),
        Some(record.response.clone())
    );
    let later = now + chrono::Duration::hours(13);
    assert_eq!(store.get_idempotent("k1", later).await.unwrap(), None);

    // A message refused for a conflict leaves no idempotency record behind.
    let mut dup = message(&a.id, "a.b", None);
    dup.event_id = Some("e".into());
    store
        .create_message(new_message(dup.clone()))
        .await
        .unwrap();
    let refused = NewMessage {
        idempotency: Some(IdempotencyRecord {
            key: "k2".into(),
            ..record
        }),
        ..new_message(Message {
            id: MessageId::new(),
            ..dup
        })
    };
    assert!(store.create_message(refused).await.is_err());
    assert_eq!(store.get_idempotent("k2", now).await.unwrap(), None);
}

pub async fn purging_idempotency_deletes_only_expired_records(store: Arc<dyn Store>) {
    let now = clock_now();
    let record = |key: &str, expires_in: i64| IdempotencyRecord {
        key: key.into(),
        response: IdempotentResponse {
            status: 200,
            body: key.as_bytes().to_vec(),
        },
        expires_at: now + chrono::Duration::seconds(expires_in),
    };
    for (key, expires_in) in [("gone-1", -60), ("gone-2", -1), ("kept", 60)] {
        store
            .put_idempotent(&record(key, expires_in))
            .await
            .unwrap();
    }
    assert_eq!(store.purge_idempotency(now).await.unwrap(), 2);
    assert_eq!(
        store.purge_idempotency(now).await.unwrap(),
        0,
        "nothing left"
    );
    assert_eq!(
        store.get_idempotent("kept", now).await.unwrap(),
        Some(record("kept", 60).response)
    );
    // Gone from the table, not merely expired: read as of before they expired, they are
    // still not there.
    let before = now - chrono::Duration::seconds(120);
    for key in ["gone-1", "gone-2"] {
        assert_eq!(
            store.get_idempotent(key, before).await.unwrap(),
            None,
            "{key}"
        );
    }
}

/// Two creates carrying the same live idempotency key (a client retrying on another node
/// while the first node's answer was lost) create one message: the second is refused with
/// `idempotency_conflict`, concurrent or not, and nothing of it is written. Once the
/// record has expired, the key creates again.
pub async fn a_live_idempotency_key_creates_one_message(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let now = clock_now();
    let record = IdempotencyRecord {
        key: "retried".into(),
        response: IdempotentResponse {
            status: 202,
            body: b"{\"id\":\"first\"}".to_vec(),
        },
        expires_at: now + chrono::Duration::hours(12),
    };
    let create = |created_at: DateTime<Utc>| NewMessage {
        idempotency: Some(record.clone()),
        ..new_message(Message {
            created_at,
            ..message(&a.id, "a.b", None)
        })
    };
    let (one, two) = (create(now), create(now));
    let results = join_all(vec![
        Box::pin(store.create_message(one)),
        Box::pin(store.create_message(two)),
    ])
    .await;
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(refused.len(), 1, "{results:?}");
    assert_eq!(refused[0].code(), crate::Code::IdempotencyConflict);
    let again = store.create_message(create(now)).await;
    assert_eq!(again.unwrap_err().code(), crate::Code::IdempotencyConflict);
    let page = store
        .list_messages(&a.id, &MessageFilter::default(), &first(10))
        .await
        .unwrap();
    assert_eq!(page.data.len(), 1, "one message for one key");

    let after_expiry = now + chrono::Duration::hours(13);
    store.create_message(create(after_expiry)).await.unwrap();
    let page = store
        .list_messages(&a.id, &MessageFilter::default(), &first(10))
        .await
        .unwrap();
    assert_eq!(page.data.len(), 2, "an expired key creates again");
}
