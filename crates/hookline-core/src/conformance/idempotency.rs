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
