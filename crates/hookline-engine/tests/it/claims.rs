//! How often the claim loop asks its queue (at every wake-up, or no more often than the
//! queue's claim spacing), and for how many deliveries.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hookline_core::id::{AppId, EndpointId, MessageId};
use hookline_core::model::MessageStatus;
use hookline_core::store::{AttemptOutcome, DeliveryJob, DeliveryQueue};
use hookline_store_sqlite::SqliteStore;
use tokio::time::Instant;

use crate::support::{Receiver, Reply, World, config, eventually};

const WAIT: Duration = Duration::from_secs(10);

/// The real store, counting claims and the deliveries given back, asking for `spacing`
/// between claims, and saying that `nodes` workers share it.
#[derive(Debug)]
struct Counted {
    store: Arc<SqliteStore>,
    spacing: Duration,
    nodes: usize,
    claims: AtomicUsize,
    given_back: AtomicUsize,
}

impl Counted {
    fn new(store: &Arc<SqliteStore>, spacing: Duration) -> Arc<Self> {
        Self::shared(store, spacing, 1)
    }

    fn shared(store: &Arc<SqliteStore>, spacing: Duration, nodes: usize) -> Arc<Self> {
        Arc::new(Counted {
            store: Arc::clone(store),
            spacing,
            nodes,
            claims: AtomicUsize::new(0),
            given_back: AtomicUsize::new(0),
        })
    }
}

#[async_trait::async_trait]
impl DeliveryQueue for Counted {
    async fn claim_due_skipping(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
        skip_apps: &[AppId],
    ) -> hookline_core::Result<Vec<DeliveryJob>> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        self.store
            .claim_due_skipping(owner, now, lease, limit, skip_apps)
            .await
    }

    async fn release(
        &self,
        deliveries: Vec<(MessageId, EndpointId)>,
        retry_at: DateTime<Utc>,
    ) -> hookline_core::Result<()> {
        self.given_back
            .fetch_add(deliveries.len(), Ordering::SeqCst);
        self.store.release(deliveries, retry_at).await
    }

    async fn record_outcomes(&self, outcomes: Arc<[AttemptOutcome]>) -> hookline_core::Result<()> {
        self.store.record_outcomes(outcomes).await
    }

    async fn release_owned(&self, owner: &str) -> hookline_core::Result<u64> {
        self.store.release_owned(owner).await
    }

    fn claim_spacing(&self) -> Duration {
        self.spacing
    }

    async fn heartbeat(&self, _node: &str, _ttl: Duration) -> hookline_core::Result<usize> {
        Ok(self.nodes)
    }

    async fn next_due(&self, now: DateTime<Utc>) -> hookline_core::Result<Option<DateTime<Utc>>> {
        self.store.next_due(now).await
    }

    async fn queue_depth(
        &self,
        now: DateTime<Utc>,
    ) -> hookline_core::Result<hookline_core::metrics::QueueDepth> {
        self.store.queue_depth(now).await
    }
}

/// Messages queued one by one, each waking the engine: how many claims the engine made
/// delivering them all, and how long that took.
async fn claims_for_messages_one_by_one(spacing: Duration, nodes: usize) -> (usize, Duration) {
    let world = World::new().await;
    let receiver = Receiver::always(Reply::status(204)).await;
    let endpoint = world.endpoint(&receiver.url("/"), |_| {}).await;
    let queue = Counted::shared(&world.store, spacing, nodes);
    let started = Instant::now();
    let engine = world.start_on(queue.clone(), config(&[]));
    let mut messages = Vec::new();
    for n in 0..12 {
        messages.push(world.message(&format!(r#"{{"n":{n}}}"#)).await);
        engine.wake.notify_one();
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    for message in &messages {
        eventually("every message delivered", WAIT, || async {
            (world.destination(message, &endpoint).await.status == MessageStatus::Success)
                .then_some(())
        })
        .await;
    }
    let took = started.elapsed();
    engine.stop().await;
    assert_eq!(receiver.count(), messages.len(), "each delivered once");
    (queue.claims.load(Ordering::SeqCst), took)
}

#[tokio::test]
async fn a_claim_waits_out_the_queues_spacing_after_the_last() {
    let spacing = Duration::from_millis(200);
    let (claims, took) = claims_for_messages_one_by_one(spacing, 1).await;
    // One claim at the start, then at most one per spacing (and the one in progress).
    let most = 2 + (took.as_millis() / spacing.as_millis()) as usize;
    assert!(
        claims <= most,
        "{claims} claims in {took:?}, spaced {spacing:?}: at most {most}"
    );
}

/// With three live workers, each spaces its claims three times as far: together they
/// claim about as often as one would.
#[tokio::test]
async fn a_worker_of_three_spaces_its_claims_three_times_as_far() {
    let spacing = Duration::from_millis(100);
    let (claims, took) = claims_for_messages_one_by_one(spacing, 3).await;
    let most = 2 + (took.as_millis() / (3 * spacing.as_millis())) as usize;
    assert!(
        claims <= most,
        "{claims} claims in {took:?}, spaced {spacing:?} times 3: at most {most}"
    );
}

#[tokio::test]
async fn without_spacing_every_wake_up_claims() {
    let (claims, took) = claims_for_messages_one_by_one(Duration::ZERO, 1).await;
    // A wake-up that comes while a claim runs joins the next one; 40 ms apart, most
    // wake-ups find the loop waiting. Spaced 200 ms, the same run would allow at most
    // 2 + took / 200 ms claims (5 or 6).
    assert!(claims >= 8, "{claims} claims for 12 wake-ups in {took:?}");
}

/// One app's backlog, over many endpoints, goes out at the app's share with next to
/// nothing given back. Once the app held its share, each delivery that ended used to
/// start a claim of every free worker, all of them the app's, of which all but one or two
/// went back to the queue: in a run of this test, 635 of the 960 deliveries were claimed
/// only to be given back; now 16 to 32 are (those of the first claims, which ask for every
/// free worker before anything is known of the app's share).
#[tokio::test]
async fn an_app_at_its_share_claims_only_what_it_has_room_for() {
    let world = World::new().await;
    let receiver = Receiver::always(Reply::status(204).delay(Duration::from_millis(10))).await;
    let endpoints = world.endpoints(&receiver, 8).await;
    let messages = world.messages(120).await;
    let queue = Counted::new(&world.store, Duration::ZERO);
    // The app's share is 16 of the 32 workers, and binds before its endpoints' limits
    // (4 in flight each). The first claim of all 32 workers gives half back (so may the
    // other loop's first). The engine polls once a second and claims in two loops, as it
    // does in production on SQLite.
    let engine = world.start_on(
        queue.clone(),
        hookline_engine::EngineConfig {
            concurrency: 32,
            max_in_flight_per_endpoint: 4,
            claimers: 2,
            poll_interval: Duration::from_secs(1),
            ..config(&[])
        },
    );
    let deliveries = messages.len() * endpoints.len();
    eventually("every delivery made", Duration::from_secs(30), || async {
        (receiver.count() >= deliveries).then_some(())
    })
    .await;
    engine.stop().await;
    assert_eq!(receiver.count(), deliveries, "each delivered once");
    assert!(
        receiver.most_in_flight() <= 16,
        "the app held more than its share: {}",
        receiver.most_in_flight()
    );
    let given_back = queue.given_back.load(Ordering::SeqCst);
    println!("{deliveries} deliveries, {given_back} given back");
    assert!(
        given_back * 8 <= deliveries,
        "{given_back} of {deliveries} deliveries claimed only to be given back"
    );
}

/// While one app's backlog keeps it at its share, another app's retry, which falls due by
/// time with nothing to announce it, is still claimed within moments: the claim loop takes
/// the backlogged app to be the only one with deliveries due for half a second at most,
/// not for as long as the backlog lasts.
#[tokio::test]
async fn a_retry_falling_due_is_claimed_beside_another_apps_backlog() {
    let world = World::new().await;
    let slow = Receiver::always(Reply::status(204).delay(Duration::from_millis(20))).await;
    let backlogged = world.endpoints(&slow, 4).await;
    let backlog = world.messages(400).await.len() * backlogged.len();
    let other = world.another_app("other").await;
    let flaky = Receiver::start(vec![Reply::status(500)], Reply::status(204)).await;
    world
        .endpoint_in(&other, &flaky.url("/other"), |_| {})
        .await;
    // 16 of the backlog in flight at a time, 20 ms each: about two seconds of it. The
    // other app's first attempt fails and is retried 100 ms later.
    let engine = world.start(hookline_engine::EngineConfig {
        concurrency: 32,
        max_in_flight_per_endpoint: 8,
        poll_interval: Duration::from_secs(1),
        ..config(&[100])
    });
    eventually("the backlog to hold its share", WAIT, || async {
        (slow.count() >= 32).then_some(())
    })
    .await;
    world.message_in(&other, r#"{"other":1}"#).await;
    engine.wake.notify_one();
    let backlog_left = eventually("the other app's retry", WAIT, || async {
        (flaky.count() >= 2).then(|| backlog - slow.count())
    })
    .await;
    engine.stop().await;
    println!("the retry went out with {backlog_left} of {backlog} backlog deliveries left");
    assert!(
        backlog_left >= 400,
        "the retry waited for the backlog: {backlog_left} of {backlog} left"
    );
}
