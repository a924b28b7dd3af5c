//! Wake-ups through `LISTEN/NOTIFY`, and surviving the server dropping connections.

use std::time::Duration;

use hookline_core::Error;
use hookline_core::store::{MessageStore, ResourceStore};
use tokio::sync::broadcast;

use crate::claims::{app, endpoint, message};
use crate::{open, raw, unique_schema, url};

const PATIENCE: Duration = Duration::from_secs(10);

async fn woken(receiver: &mut broadcast::Receiver<()>) {
    match tokio::time::timeout(PATIENCE, receiver.recv()).await {
        Ok(Ok(())) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
        Ok(Err(error)) => panic!("listener gone: {error}"),
        Err(_) => panic!("no wake-up within {PATIENCE:?}"),
    }
}

#[tokio::test]
async fn a_new_message_wakes_listeners() {
    let Some(url) = url() else { return };
    let store = open(&url, &unique_schema()).await;
    let mut due = store.listen_due();
    // The listener says once that it is listening (and that anything may be due).
    woken(&mut due).await;

    let a = app();
    store.create_app(&a).await.unwrap();
    store.create_endpoint(&endpoint(&a.id)).await.unwrap();
    store.create_message(message(&a.id)).await.unwrap();
    woken(&mut due).await;
}

/// The notification goes out after the write has committed, in a transaction of its
/// own: another node sharing the schema hears of the work.
#[tokio::test]
async fn a_new_message_on_one_node_wakes_the_others() {
    let Some(url) = url() else { return };
    let schema = unique_schema();
    let (writer, other) = (open(&url, &schema).await, open(&url, &schema).await);
    let mut due = other.listen_due();
    woken(&mut due).await;

    let a = app();
    writer.create_app(&a).await.unwrap();
    writer.create_endpoint(&endpoint(&a.id)).await.unwrap();
    writer.create_message(message(&a.id)).await.unwrap();
    woken(&mut due).await;
}

#[tokio::test]
async fn lost_connections_fail_softly_and_come_back() {
    let Some(url) = url() else { return };
    let schema = unique_schema();
    // Tag the store's connections so that they, and only they, can be cut.
    let separator = if url.contains('?') { '&' } else { '?' };
    let tagged = format!("{url}{separator}application_name={schema}");
    let store = open(&tagged, &schema).await;
    let mut due = store.listen_due();
    woken(&mut due).await;
    let a = app();
    store.create_app(&a).await.unwrap();

    let admin = raw(&url, &schema).await;
    let cut = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&schema],
        )
        .await
        .unwrap();
    assert!(cut.len() >= 2, "the pool's and the listener's connections");

    // Requests see at worst `Unavailable`, and a retry goes through.
    let mut answered = false;
    for _ in 0..50 {
        match store.get_app(a.id.as_str()).await {
            Ok(read) => {
                assert_eq!(read, a);
                answered = true;
                break;
            }
            Err(Error::Unavailable) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(other) => panic!("a lost connection is not {other:?}"),
        }
    }
    assert!(answered, "the store reconnects");

    // The listener reconnects, says so, and hears new work again.
    woken(&mut due).await;
    store.create_endpoint(&endpoint(&a.id)).await.unwrap();
    store.create_message(message(&a.id)).await.unwrap();
    woken(&mut due).await;
}
