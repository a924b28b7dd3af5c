//! Claims by several nodes at once: `FOR UPDATE … SKIP LOCKED` hands each due delivery to
//! exactly one of them, and never makes one wait for another.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use hookline_core::Store;
use hookline_core::id::{AppId, MessageId};
use hookline_core::model::{Application, Endpoint, Message};
use hookline_core::store::{DeliveryQueue, NewMessage};

use crate::{now, open, raw, unique_schema, url};

const LEASE: Duration = Duration::from_secs(60);

pub fn app() -> Application {
    let now = now();
    Application {
        id: AppId::new(),
        uid: None,
        name: "Acme".into(),
        throttle_rate: None,
        metadata: BTreeMap::new(),
        created_at: now,
        updated_at: now,
    }
}

/// An endpoint of `app` for every event type and channel.
pub fn endpoint(app: &AppId) -> Endpoint {
    hookline_core::conformance::endpoint(app, None, None)
}

pub fn message(app: &AppId) -> NewMessage {
    NewMessage {
        message: Message {
            id: MessageId::new(),
            app_id: app.clone(),
            event_id: None,
            event_type: "a.b".into(),
            payload: Some("{}".into()),
            channels: None,
            headers: BTreeMap::new(),
            created_at: now(),
        },
        only_endpoint: None,
        idempotency: None,
        payload_expires_at: None,
        lease: None,
    }
}

/// An app with `endpoints` endpoints and `messages` messages, each fanned out to all.
async fn queue(store: &dyn Store, endpoints: usize, messages: usize) -> usize {
    let a = app();
    store.create_app(&a).await.unwrap();
    for _ in 0..endpoints {
        store.create_endpoint(&endpoint(&a.id)).await.unwrap();
    }
    for _ in 0..messages {
        store.create_message(message(&a.id)).await.unwrap();
    }
    endpoints * messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_never_return_the_same_delivery() {
    let Some(url) = url() else { return };
    let schema = unique_schema();
    // Two nodes: two stores, two pools, one schema.
    let (node_a, node_b) = (open(&url, &schema).await, open(&url, &schema).await);
    let total = queue(&node_a, 3, 40).await;
    let now = now() + chrono::Duration::seconds(1);

    let mut workers = Vec::new();
    for (n, store) in [node_a.clone(), node_b.clone(), node_a, node_b]
        .into_iter()
        .enumerate()
    {
        workers.push(tokio::spawn(async move {
            let owner = format!("worker-{n}");
            let mut claimed = Vec::new();
            loop {
                let jobs = store.claim_due(&owner, now, LEASE, 7).await.unwrap();
                if jobs.is_empty() {
                    return claimed;
                }
                claimed.extend(
                    jobs.into_iter()
                        .map(|job| (job.destination.msg_id, job.destination.endpoint_id)),
                );
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut claims = 0;
    for worker in workers {
        for delivery in worker.await.unwrap() {
            claims += 1;
            assert!(seen.insert(delivery.clone()), "{delivery:?} claimed twice");
        }
    }
    assert_eq!(claims, total, "every delivery claimed exactly once");
}

#[tokio::test]
async fn a_claim_skips_rows_another_transaction_has_locked() {
    let Some(url) = url() else { return };
    let schema = unique_schema();
    let store = open(&url, &schema).await;
    queue(&store, 1, 3).await;
    let now = now() + chrono::Duration::seconds(1);

    // Another node is midway through claiming the first due delivery.
    let mut other = raw(&url, &schema).await;
    let tx = other.transaction().await.unwrap();
    let locked: String = tx
        .query_one(
            "SELECT msg_id FROM destination ORDER BY next_attempt LIMIT 1 FOR UPDATE",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    let jobs = tokio::time::timeout(
        Duration::from_secs(5),
        store.claim_due("node-a", now, LEASE, 10),
    )
    .await
    .expect("a claim does not wait for another node's lock")
    .unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(
        jobs.iter()
            .all(|job| job.destination.msg_id.as_str() != locked)
    );

    tx.rollback().await.unwrap();
    let rest = store.claim_due("node-a", now, LEASE, 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].destination.msg_id.as_str(), locked);
}

/// Polls claimed by several nodes at once over one provider group (each provider read
/// from its own stretch of the index, more rows locked than leased): every due job goes to
/// exactly one of them, and together they take them all.
#[tokio::test]
async fn concurrent_poll_claims_never_return_the_same_job() {
    use hookline_core::job::{Job, Provider};
    use hookline_core::store::{JobStore, ResourceStore};

    let Some(url) = url() else { return };
    let schema = unique_schema();
    let (node_a, node_b) = (open(&url, &schema).await, open(&url, &schema).await);
    let a = app();
    node_a.create_app(&a).await.unwrap();
    let registered = now();
    let providers = [Provider::OpenaiBatch, Provider::OpenaiResponse];
    let total = 90;
    for n in 0..total {
        let mut job = Job::new(
            providers[n % 2],
            Some(format!("poll_{n}")),
            a.id.clone(),
            registered,
            registered + chrono::Duration::hours(1),
        );
        job.poll.as_mut().unwrap().after = Duration::ZERO;
        node_a
            .create_job(job.registration(None, None, registered, None))
            .await
            .unwrap();
    }
    let at = registered + chrono::Duration::seconds(1);

    let mut workers = Vec::new();
    for (n, store) in [node_a.clone(), node_b.clone(), node_a, node_b]
        .into_iter()
        .enumerate()
    {
        workers.push(tokio::spawn(async move {
            let owner = format!("poller-{n}");
            let mut claimed = Vec::new();
            // A claim may come back empty while the others hold the rest locked: stop
            // only after a few empty ones in a row.
            let mut empty = 0;
            while empty < 3 {
                let due = store
                    .claim_polls(&owner, at, LEASE, 7, &providers)
                    .await
                    .unwrap();
                if due.is_empty() {
                    empty += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                claimed.extend(due.into_iter().map(|poll| poll.job.id));
            }
            claimed
        }));
    }
    let mut seen = HashSet::new();
    for worker in workers {
        for job in worker.await.unwrap() {
            assert!(seen.insert(job.clone()), "{job} claimed twice");
        }
    }
    assert_eq!(seen.len(), total, "every due job claimed exactly once");
}
