//! Deletions that no foreign key carries out: what a transaction that began before the
//! deletion committed writes after it is deleted once that transaction has ended.

use std::time::Duration;

use hookline_core::id::MessageId;
use hookline_core::store::{MessageStore, ResourceStore};

use crate::claims::{app, endpoint, message};
use crate::{open, raw, unique_schema, url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_written_while_their_application_is_deleted_are_deleted_after() {
    let Some(url) = url() else { return };
    let schema = unique_schema();
    let store = open(&url, &schema).await;
    let a = app();
    store.create_app(&a).await.unwrap();
    store.create_endpoint(&endpoint(&a.id)).await.unwrap();
    let first = message(&a.id);
    let first_id = first.message.id.clone();
    store.create_message(first).await.unwrap();

    // A create that read the application before the deletion, and writes its message and
    // delivery (a copy of the first's) while the deletion runs.
    let late = MessageId::new();
    let mut creator = raw(&url, &schema).await;
    let create = creator.transaction().await.unwrap();
    create
        .batch_execute(&format!(
            "CREATE TEMP TABLE late_message ON COMMIT DROP AS
                 SELECT * FROM message WHERE id = '{first_id}';
             UPDATE late_message SET id = '{late}';
             INSERT INTO message SELECT * FROM late_message;
             CREATE TEMP TABLE late_delivery ON COMMIT DROP AS
                 SELECT * FROM destination WHERE msg_id = '{first_id}';
             UPDATE late_delivery SET msg_id = '{late}';
             INSERT INTO destination SELECT * FROM late_delivery;"
        ))
        .await
        .unwrap();
    let deleting = tokio::spawn({
        let store = store.clone();
        let id = a.id.clone();
        async move { store.delete_app(&id).await }
    });
    // The deletion commits, then waits for the create to end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!deleting.is_finished(), "the deletion waits for the create");
    create.commit().await.unwrap();
    deleting.await.unwrap().unwrap();

    let count = |sql: &'static str| {
        let creator = &creator;
        let late = late.to_string();
        async move {
            creator
                .query_one(sql, &[&late])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(count("SELECT count(*) FROM message WHERE id = $1").await, 0);
    assert_eq!(
        count("SELECT count(*) FROM destination WHERE msg_id = $1").await,
        0
    );
}
