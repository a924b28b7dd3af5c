//! Worker heartbeats: nodes sharing a database count each other, so that each enforces its
//! share of every throttle rate.

use std::time::Duration;

use hookline_core::store::DeliveryQueue;

use crate::{open, unique_schema, url};

#[tokio::test]
async fn workers_sharing_a_database_count_each_other_until_they_go_quiet() {
    let Some(url) = url() else {
        return;
    };
    let schema = unique_schema();
    let a = open(&url, &schema).await;
    let b = open(&url, &schema).await;
    let ttl = Duration::from_secs(60);
    assert_eq!(a.heartbeat("node-a", ttl).await.unwrap(), 1);
    assert_eq!(b.heartbeat("node-b", ttl).await.unwrap(), 2);
    assert_eq!(a.heartbeat("node-a", ttl).await.unwrap(), 2, "b is counted");
    assert_eq!(b.heartbeat("node-c", ttl).await.unwrap(), 3);
    // A worker not heard of within the ttl no longer counts; the caller always does.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let short = Duration::from_millis(200);
    assert_eq!(a.heartbeat("node-a", short).await.unwrap(), 1);
    assert_eq!(b.heartbeat("node-b", short).await.unwrap(), 2);
}
