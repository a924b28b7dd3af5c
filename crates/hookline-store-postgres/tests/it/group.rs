//! Group commits: a batch whose statements wait on a row lock does not hold up the writes
//! behind it.

use std::time::Duration;

use hookline_core::Error;
use hookline_core::id::MessageId;
use hookline_core::store::{MessageStore, ResourceStore};

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
