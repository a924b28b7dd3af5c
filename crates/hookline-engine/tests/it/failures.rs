//! Failed attempts: retries until the schedule runs out, `410 Gone`, redirects, resends.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use hookline_core::Clock as _;
use hookline_core::clock::ManualClock;
use hookline_core::id::{AppId, EndpointId, MessageId};
use hookline_core::model::{ErrorKind, MessageStatus, TriggerType};
use hookline_core::store::{AttemptOutcome, DeliveryJob, DeliveryQueue, MessageStore};
use hookline_store_sqlite::SqliteStore;

use crate::support::{Receiver, Reply, World, config, eventually};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn retries_follow_the_schedule_until_exhausted() {
    let world = World::new().await;
    let receiver = Receiver::always(Reply::status(500).body("boom")).await;
    let endpoint = world.endpoint(&receiver.url("/"), |_| {}).await;
    let message = world.message(r#"{"try":"again"}"#).await;
    let engine = world.start(config(&[100, 100, 100]));

    let destination = eventually("the schedule to run out", WAIT, || async {
        let destination = world.destination(&message, &endpoint).await;
        (destination.status == MessageStatus::Fail).then_some(destination)
    })
    .await;
    engine.stop().await;

    assert_eq!(destination.attempts, 4, "the first try and three retries");
    assert_eq!(destination.next_attempt, None);
    let attempts = world.attempts(&message).await;
    assert_eq!(attempts.len(), 4);
    for attempt in &attempts {
        assert_eq!(attempt.status, MessageStatus::Fail);
        assert_eq!(attempt.response_status_code, 500);
        assert_eq!(attempt.response.as_deref(), Some("boom"));
        assert_eq!(attempt.error_kind, None);
    }
    let requests = receiver.received();
    assert_eq!(requests.len(), 4, "nothing is sent after exhaustion");
    for request in &requests {
        assert_eq!(
            request.header("webhook-id"),
            Some(message.id.as_str()),
            "the same webhook-id on every attempt"
        );
    }
    for pair in requests.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(90), "retried after {gap:?}");
    }
    let endpoint = world.reload(&endpoint).await;
    assert!(
        endpoint.failing_since.is_some(),
        "exhaustion marks the endpoint failing"
    );
    assert!(!endpoint.disabled);
}

#[tokio::test]
async fn a_success_on_retry_ends_the_schedule_and_clears_failing() {
    let world = World::new().await;
    let receiver = Receiver::start(vec![Reply::status(500)], Reply::status(200)).await;
    let endpoint = world
        .endpoint(&receiver.url("/"), |endpoint| {
            endpoint.failing_since = Some(chrono::Utc::now() - chrono::Duration::hours(1));
        })
        .await;
    let message = world.message("{}").await;
    let engine = world.start(config(&[100, 100]));
    let destination = eventually("the retry to succeed", WAIT, || async {
        let destination = world.destination(&message, &endpoint).await;
        (destination.status == MessageStatus::Success).then_some(destination)
    })
    .await;
    engine.stop().await;

    assert_eq!(destination.attempts, 2);
    assert_eq!(receiver.count(), 2);
    let statuses: Vec<i16> = world
        .attempts(&message)
        .await
        .iter()
        .map(|attempt| attempt.response_status_code)
        .collect();
    assert_eq!(statuses, [500, 200]);
    assert_eq!(world.reload(&endpoint).await.failing_since, None);
}

#[tokio::test]
async fn busy_answers_back_off_a_minute_and_honour_retry_after() {
    let world = World::new().await;
    let receiver = Receiver::always(Reply::status(503).header("retry-after", "90")).await;
    let endpoint = world.endpoint(&receiver.url("/"), |_| {}).await;
    let message = world.message("{}").await;
    let engine = world.start(config(&[100, 100]));
    let destination = eventually("the first failure", WAIT, || async {
        let destination = world.destination(&message, &endpoint).await;
        (destination.attempts == 1).then_some(destination)
    })
    .await;
    engine.stop().await;

    assert_eq!(destination.status, MessageStatus::Pending);
    // The 100 ms step becomes at least 60 s for a 503, and Retry-After: 90 fits within
    // [60 s, 120 s], so it is honoured.
    let attempt_at = world.attempts(&message).await[0].created_at;
    let wait = destination.next_attempt.unwrap() - attempt_at;
    assert!(
        (88..=92).contains(&wait.num_seconds()),
        "next attempt {wait} after the first"
    );
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn gone_disables_the_endpoint_at_once() {
    let world = World::new().await;
    let receiver = Receiver::always(Reply::status(410)).await;
    let endpoint = world.endpoint(&receiver.url("/"), |_| {}).await;
    let message = world.message("{}").await;
    let engine = world.start(config(&[100, 100, 100]));
    let endpoint_now = eventually("the endpoint to be disabled", WAIT, || async {
        let current = world.reload(&endpoint).await;
        current.disabled.then_some(current)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    engine.stop().await;

    assert!(endpoint_now.disabled);
    let destination = world.destination(&message, &endpoint).await;
    assert_eq!(destination.status, MessageStatus::Fail);
    assert_eq!(destination.next_attempt, None);
    assert_eq!(receiver.count(), 1, "no retry to a gone endpoint");
    assert_eq!(world.attempts(&message).await[0].response_status_code, 410);
}

#[tokio::test]
async fn a_redirect_is_a_failure_and_is_never_followed() {
    let world = World::new().await;
    let target = Receiver::always(Reply::status(200)).await;
    let redirector =
        Receiver::always(Reply::status(307).header("location", target.url("/elsewhere"))).await;
    let endpoint = world.endpoint(&redirector.url("/"), |_| {}).await;
    let message = world.message("{}").await;
    let engine = world.start(config(&[]));
    let destination = eventually("the attempt", WAIT, || async {
        let destination = world.destination(&message, &endpoint).await;
        (destination.status == MessageStatus::Fail).then_some(destination)
    })
    .await;
    engine.stop().await;

    assert_eq!(destination.attempts, 1);
    let attempts = world.attempts(&message).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status, MessageStatus::Fail);
    assert_eq!(attempts[0].response_status_code, 307);
    assert_eq!(attempts[0].error_kind, Some(ErrorKind::Redirect));
    assert_eq!(redirector.count(), 1);
    assert_eq!(target.count(), 0, "the redirect target gets nothing");
}

#[tokio::test]
async fn a_manual_resend_is_tried_once() {
    let world = World::new().await;
    let receiver = Receiver::always(Reply::status(500)).await;
    let endpoint = world.endpoint(&receiver.url("/"), |_| {}).await;
    let message = world.message("{}").await;
    let engine = world.start(config(&[50]));
    eventually("exhaustion", WAIT, || async {
        (world.destination(&message, &endpoint).await.status == MessageStatus::Fail).then_some(())
    })
    .await;
    assert_eq!(receiver.count(), 2);

    world
        .store
        .requeue(
            &world.app.id,
            &message.id,
            &endpoint.id,
            TriggerType::Manual,
            world.clock.now(),
        )
        .await
        .expect("resend");
    engine.wake.notify_one();
    let attempts = eventually("the resend", WAIT, || async {
        let attempts = world.attempts(&message).await;
        (attempts.len() == 3).then_some(attempts)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.stop().await;

    assert_eq!(attempts[2].trigger_type, TriggerType::Manual);
    assert_eq!(receiver.count(), 3, "the failed resend is not retried");
    let destination = world.destination(&message, &endpoint).await;
    assert_eq!(destination.status, MessageStatus::Fail);
    assert_eq!(destination.next_attempt, None);
    assert_eq!(
        destination.attempts, 2,
        "a resend does not count against the schedule"
    );
}

/// Retries wait for the engine's clock, not the wall: held still, the clock lets no retry
/// fall due however long the test waits; moved past the due time, it retries at once. The
/// test waits an hour of the schedule without sleeping it.
#[tokio::test]
async fn retries_wait_for_the_clock_not_the_wall() {
    let clock = ManualClock::starting_now();
    let world = World::with_clock(clock.clone()).await;
    let receiver = Receiver::start(vec![Reply::status(500)], Reply::status(200)).await;
    let endpoint = world.endpoint(&receiver.url("/"), |_| {}).await;
    let message = world.message(r#"{"retry":"in an hour"}"#).await;
    let hour = Duration::from_secs(3600);
    let engine = world.start(config(&[3_600_000]));

    let first = eventually("the first attempt", WAIT, || async {
        let destination = world.destination(&message, &endpoint).await;
        (destination.attempts == 1).then_some(destination)
    })
    .await;
    let due = clock.now() + chrono::Duration::from_std(hour).unwrap();
    assert_eq!(
        first.next_attempt,
        Some(due),
        "due an hour after the attempt"
    );

    // Polling goes on (every 50 ms) but the clock stands still: nothing falls due.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 1);

    clock.advance(hour);
    engine.wake.notify_one();
    let done = eventually("the retry", WAIT, || async {
        let destination = world.destination(&message, &endpoint).await;
        (destination.status == MessageStatus::Success).then_some(destination)
    })
    .await;
    engine.stop().await;
    assert_eq!(done.attempts, 2);
    assert_eq!(receiver.count(), 2);
    let attempts = world.attempts(&message).await;
    assert_eq!(
        attempts.iter().map(|a| a.created_at).max(),
        Some(due),
        "the retry is stamped with the clock's time"
    );
}

/// The real store, except that it refuses every batch of outcomes holding one chosen
/// message's attempt: an outcome the store cannot take, as PostgreSQL could not take an
/// answer holding a NUL byte.
#[derive(Debug)]
struct Poisoned {
    store: Arc<SqliteStore>,
    poison: MessageId,
    /// The largest batch refused: more than one means neighbours shared the poison's batch.
    largest_refused: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl DeliveryQueue for Poisoned {
    async fn claim_due_skipping(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
        skip_apps: &[AppId],
    ) -> hookline_core::Result<Vec<DeliveryJob>> {
        self.store
            .claim_due_skipping(owner, now, lease, limit, skip_apps)
            .await
    }

    async fn release(
        &self,
        deliveries: Vec<(MessageId, EndpointId)>,
        retry_at: DateTime<Utc>,
    ) -> hookline_core::Result<()> {
        self.store.release(deliveries, retry_at).await
    }

    async fn record_outcomes(&self, outcomes: Arc<[AttemptOutcome]>) -> hookline_core::Result<()> {
        if outcomes.iter().any(|o| o.attempt.msg_id == self.poison) {
            self.largest_refused
                .fetch_max(outcomes.len(), std::sync::atomic::Ordering::SeqCst);
            return Err(hookline_core::Error::storage(std::io::Error::other(
                "poisoned row",
            )));
        }
        self.store.record_outcomes(outcomes).await
    }

    async fn release_owned(&self, owner: &str) -> hookline_core::Result<u64> {
        self.store.release_owned(owner).await
    }

    fn claim_spacing(&self) -> Duration {
        self.store.claim_spacing()
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

/// One outcome the store cannot take does not hold back the others of its batch: they are
/// recorded one by one, and no delivery but the poisoned one is made twice.
#[tokio::test]
async fn one_unrecordable_outcome_does_not_fail_its_neighbours() {
    let world = World::new().await;
    // Slow answers: the attempts end together, so their outcomes share a batch.
    let receiver = Receiver::always(Reply::status(200).delay(Duration::from_millis(200))).await;
    let endpoint = world.endpoint(&receiver.url("/"), |_| {}).await;
    let mut messages = Vec::new();
    for n in 0..20 {
        messages.push(world.message(&format!(r#"{{"n":{n}}}"#)).await);
    }
    let poison = messages[7].id.clone();
    let queue = Arc::new(Poisoned {
        store: Arc::clone(&world.store),
        poison: poison.clone(),
        largest_refused: Default::default(),
    });
    let engine = world.start_on(queue.clone(), config(&[]));
    for message in messages.iter().filter(|m| m.id != poison) {
        eventually("every other outcome recorded", WAIT, || async {
            (world.destination(message, &endpoint).await.status == MessageStatus::Success)
                .then_some(())
        })
        .await;
    }
    engine.stop().await;
    let received = receiver.received();
    for message in &messages {
        let deliveries = received
            .iter()
            .filter(|r| r.header("webhook-id") == Some(message.id.as_str()))
            .count();
        assert_eq!(deliveries, 1, "{}", message.id);
    }
    let poisoned = world.destination(&messages[7], &endpoint).await;
    assert_ne!(poisoned.status, MessageStatus::Success, "never recorded");
    let largest = queue
        .largest_refused
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        largest > 1,
        "the poison shared a batch with others ({largest})"
    );
}
