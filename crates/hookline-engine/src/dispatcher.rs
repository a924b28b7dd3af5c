//! The claim loops: wake up, take as many deliveries as there are free workers (and,
//! when only apps at their share have any due, as those apps have room for), first from
//! the line of those handed over that could not start at once (`handoff`), then from the
//! store, admit each within its app's share and its endpoint's limits (giving back the
//! rest), run them, and record what happened in group commits.
//! Several loops may claim side by side (`claimers`), so that one claim's round trip to
//! the store does not leave the workers idle.
//!
//! Memory is bounded by configuration, whatever the backlog: at most `concurrency`
//! deliveries are held at once (a claim reserves its workers before it asks, and never asks
//! for more), at most `LINE_PER_WORKER` times that many wait in line, and finished
//! attempts wait in a bounded channel for the recorder.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use hookline_core::SharedClock;
use hookline_core::id::{AppId, EndpointId, MessageId};
use hookline_core::model::MessageStatus;
use hookline_core::store::DeliveryQueue;
use hookline_core::store::{AttemptOutcome, DeliveryJob};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, sleep, sleep_until, timeout_at};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::delivery::{Deliverer, Finished};
use crate::handoff::{Handed, Handoff, Waiter};
use crate::operational::Announcer;
use crate::ratelimit::{EndpointLimits, Ticket};

/// How long the recorder waits for more finished attempts to join a commit. Longer
/// windows were measured and dropped: 20 ms (up to 1024 outcomes) saved no CPU beyond the
/// noise once deliveries went through hyper directly, and the server's memory grew by half
/// while a backlog of a million drained, where with 5 ms it stays flat.
const GROUP_WINDOW: Duration = Duration::from_millis(5);
/// The most outcomes in one commit.
const GROUP_MAX: usize = 256;
/// How soon a delivery given back unattempted (its endpoint busy) falls due again.
const RELEASE_DELAY: Duration = Duration::from_millis(500);
/// How long a claim loop takes the apps its last claim passed over (at their share) to be
/// the only ones with deliveries due, and claims no more than their room. Other apps'
/// deliveries also fall due by time, unannounced: retries, deliveries given back, leases
/// that ran out. The first claim after this long looks at every app again, so those wait
/// at most about this much longer than they would otherwise (as long as a delivery given
/// back waits; the poll interval, if that is shorter). Each such look costs one claim that
/// gives back most of what it takes, or walks the passed-over apps' backlog.
const PASSED_OVER_FOR: Duration = Duration::from_millis(500);
/// How often a claim asks the store for half of what it takes (the odd worker going to
/// the line and the store in turn), however many handed-over deliveries wait in the
/// worker's line: a line that creates keep filling would otherwise keep the store's due
/// deliveries (retries, those given back, other nodes' creates) waiting for as long as
/// they do.
const STORE_CLAIM_EVERY: Duration = Duration::from_millis(100);
/// Claims in a row given back whole (every delivery's endpoint or app at its limits)
/// after which the claim loop rests for a poll interval. Until then it claims again at
/// once, to reach other tenants' deliveries behind a busy one's backlog: up to this many
/// batches of it are stepped over per poll.
const SKIP_AHEAD: u32 = 8;
/// Tries of a commit before its outcomes are given up (their leases then expire and the
/// deliveries are tried again: at least once, never lost).
const RECORD_TRIES: u32 = 4;
/// How often a worker announces itself to the queue ([`DeliveryQueue::heartbeat`]) and
/// learns how many workers share it, each enforcing its share of every throttle rate. A
/// worker that joins is counted by the others within this long: until then the rates may
/// be exceeded by one worker's share.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// A worker not heard of for this long no longer counts: three missed heartbeats, so that
/// one slow round trip does not make the others speed up. Until then a dead worker's share
/// goes unused (the rates are undershot, never exceeded).
const HEARTBEAT_TTL: Duration = Duration::from_secs(6);

/// What the claim loop needs, built by [`crate::Engine::run`].
#[derive(Debug)]
pub(crate) struct Dispatcher {
    pub queue: Arc<dyn DeliveryQueue>,
    pub clock: SharedClock,
    pub deliverer: Arc<Deliverer>,
    pub limits: Arc<EndpointLimits>,
    pub wake: Arc<Notify>,
    /// Deliveries handed over as their messages are created; its permits are the
    /// worker's room, which claims take from too.
    pub handoff: Arc<Handoff>,
    pub owner: String,
    pub lease: Duration,
    /// How long after its claim a delivery may still start (waiting for its endpoint).
    pub hold: Duration,
    pub concurrency: usize,
    pub batch_size: usize,
    pub claimers: usize,
    pub poll_interval: Duration,
}

impl Dispatcher {
    /// Claims and runs deliveries until `shutdown`; then lets attempts in flight finish,
    /// records them and returns.
    pub async fn run(self, shutdown: CancellationToken, announcer: Option<Announcer>) {
        let (finished_tx, finished_rx) = mpsc::channel(self.concurrency.max(1));
        let recorder = tokio::spawn(record(
            Arc::clone(&self.queue),
            finished_rx,
            announcer,
            Arc::clone(&self.wake),
        ));
        let permits = Arc::clone(&self.handoff.permits);
        let tracker = TaskTracker::new();
        // Count the workers before the first claim, so that a worker joining a busy
        // cluster does not start at the whole rate.
        self.heartbeat().await;
        let heartbeats = {
            let queue = Arc::clone(&self.queue);
            let limits = Arc::clone(&self.limits);
            let owner = self.owner.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = sleep(HEARTBEAT_INTERVAL) => {}
                    }
                    beat(queue.as_ref(), &limits, &owner).await;
                }
            })
        };

        // Claims for the room of apps at their share take turns: two loops reading the same
        // room at once would each claim all of it, and one would give it all back.
        let room_claims = tokio::sync::Mutex::new(());
        let claimers = (0..self.claimers.max(1))
            .map(|_| self.claim_loop(&shutdown, &permits, &tracker, &finished_tx, &room_claims));
        let handed = self.handoff.open(shutdown.clone());
        tokio::join!(
            futures_util::future::join_all(claimers),
            self.take_over(handed, &shutdown, &tracker, &finished_tx),
        );
        heartbeats.abort();
        // Those still in line are given back, so that other workers need not wait out
        // their leases.
        let left = self.handoff.waiting.drain();
        self.give_back_waiting(left).await;

        tracker.close();
        tracker.wait().await;
        drop(finished_tx);
        if let Err(error) = recorder.await {
            tracing::error!(%error, "outcome recorder failed");
        }
    }

    async fn claim_loop(
        &self,
        shutdown: &CancellationToken,
        permits: &Arc<Semaphore>,
        tracker: &TaskTracker,
        finished: &mpsc::Sender<Finished>,
        room_claims: &tokio::sync::Mutex<()>,
    ) {
        // Claims in a row that were given back whole.
        let mut skipped = 0;
        // The apps that the last claim passed over for being at their share, when it took
        // every other due delivery: until `only_until`, unless a wake-up says something
        // new is due first, only these apps are taken to have deliveries due, and a claim
        // asks for no more than the room they have left. A larger claim would take their
        // deliveries only to give most back; one with no room left would walk past their
        // whole backlog to find nothing.
        let mut only: Vec<AppId> = Vec::new();
        let mut only_until = Instant::now();
        // When this loop last asked the store, and whether the store had all it asked for
        // (and so likely more).
        let (mut store_claimed, mut store_has_more) = (Instant::now(), false);
        // Which of the two gets the odd worker of a claim shared between them.
        let mut odd_to_line = false;
        loop {
            // Once that time is up, the next claim looks at every app again, passing over
            // these too: it finds what the others have come to have due, without taking
            // these apps' deliveries only to give them back.
            let mut look_past = Vec::new();
            if !only.is_empty() && Instant::now() >= only_until {
                look_past = std::mem::take(&mut only);
            }
            // Held until this claim's deliveries are admitted, so that the next claim for
            // the room sees what this one took.
            let turn = if only.is_empty() {
                None
            } else {
                Some(room_claims.lock().await)
            };
            let room = if only.is_empty() {
                self.batch_size
            } else {
                self.limits.room_of(&only)
            };
            if room == 0 {
                drop(turn);
                if !self.wait_for_room(shutdown, &mut only, only_until).await {
                    return;
                }
                continue;
            }
            // Reserve the workers of this claim: every free one up to the batch size and
            // the room, and at least one.
            let mut reserved = tokio::select! {
                _ = shutdown.cancelled() => return,
                permit = Arc::clone(permits).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let more = permits
                .available_permits()
                .min(room.min(self.batch_size).max(1) - 1);
            if let Ok(more) = Arc::clone(permits).try_acquire_many_owned(more as u32) {
                reserved.merge(more);
            }
            if shutdown.is_cancelled() {
                return;
            }
            let limit = reserved.num_permits();
            let claimed_at = self.clock.now();
            let started = Instant::now();
            // Apps at their share would only have their deliveries given back: the claim
            // passes over them, so that a long backlog of one app never stands before the
            // others' deliveries.
            let for_only = !only.is_empty();
            let mut passed_over = self.limits.saturated_apps();
            for app in look_past {
                if !passed_over.contains(&app) {
                    passed_over.push(app);
                }
            }
            // Deliveries handed over and waiting in line go first: they are leased already,
            // where a claim from the store writes every row it takes. The store gets half
            // of the claim every so often, and of every claim while it has more due, and
            // whatever the line cannot fill; the line then what the store could not.
            let store_turn = store_has_more || store_claimed.elapsed() >= STORE_CLAIM_EVERY;
            let line_share = if store_turn {
                odd_to_line = !odd_to_line;
                (limit + usize::from(odd_to_line)) / 2
            } else {
                limit
            };
            let mut waiters = Vec::new();
            self.take_line(line_share, &mut passed_over, &mut waiters, &[])
                .await;
            // The line filled its share: it may hold more.
            let line_full = !waiters.is_empty() && waiters.len() == line_share;
            let mut from_store = Vec::new();
            if waiters.len() < limit {
                let ask = limit - waiters.len();
                from_store = match self
                    .queue
                    .claim_due_skipping(&self.owner, claimed_at, self.lease, ask, &passed_over)
                    .await
                {
                    Ok(jobs) => jobs,
                    Err(error) => {
                        tracing::error!(%error, "claiming due deliveries failed");
                        drop(turn);
                        // Those taken from the line go all the same.
                        let jobs = waiters.into_iter().map(|w| (w.job, w.start_by));
                        let back = self.start_all(jobs, reserved, tracker, finished, shutdown);
                        release(self.queue.as_ref(), back, self.clock.now()).await;
                        if !self.pause(shutdown, self.poll_interval).await {
                            return;
                        }
                        only.clear();
                        continue;
                    }
                };
                store_claimed = Instant::now();
                store_has_more = from_store.len() >= ask;
                let left = ask.saturating_sub(from_store.len());
                if store_turn && left > 0 {
                    self.take_line(left, &mut passed_over, &mut waiters, &from_store)
                        .await;
                }
            }
            let from_line = waiters.len();
            let line_back = match reserved.split(from_line) {
                Some(permits) => {
                    let jobs = waiters
                        .into_iter()
                        .map(|waiter| (waiter.job, waiter.start_by));
                    self.start_all(jobs, permits, tracker, finished, shutdown)
                }
                // Never: the line gives no more than the claim's workers.
                None => waiters.iter().map(Waiter::key).collect(),
            };
            hookline_core::metrics::metrics()
                .record_handed(from_line - line_back.len(), line_back.len());
            let from_store_n = from_store.len();
            let mut given_back = line_back;
            if from_line < limit {
                // A store never returns more than it was asked for; should one, the extra
                // deliveries are given back rather than run past the concurrency.
                let start_by = started + self.hold;
                let jobs = from_store.into_iter().map(|job| (job, start_by));
                let store_back = self.start_all(jobs, reserved, tracker, finished, shutdown);
                hookline_core::metrics::metrics()
                    .record_claim(from_store_n - store_back.len(), store_back.len());
                given_back.extend(store_back);
            } else {
                drop(reserved);
            }
            let claimed = from_line + from_store_n;
            drop(turn);
            let deferred = given_back.len();
            release(self.queue.as_ref(), given_back, self.clock.now()).await;
            if claimed > 0 {
                tracing::debug!(claimed, deferred, "claimed deliveries");
            }
            if (claimed == limit || line_full) && deferred < claimed {
                skipped = 0;
                continue; // More may be due right now.
            }
            if !passed_over.is_empty() && claimed < limit {
                // Apps were passed over for being at their share: what is left for them is
                // due now, and goes as soon as they have room, not at the next poll.
                skipped = 0;
                if for_only {
                    // A claim for the room of apps passed over before found less than it
                    // asked for: they have nothing more due until something new is.
                    if !self.wait_for_room(shutdown, &mut only, only_until).await {
                        return;
                    }
                } else {
                    only = passed_over;
                    only_until = Instant::now() + PASSED_OVER_FOR.min(self.poll_interval);
                }
                continue;
            }
            let wait = if claimed == limit {
                // Every delivery claimed was given back: its endpoints or apps are at their
                // limits. Claims go oldest first, so other tenants' deliveries may be right
                // behind a busy one's backlog; those given back are due again only later, so
                // the next claim sees what is behind them. Look a few batches further at
                // once, then rest rather than churn a backlog that cannot go anyway.
                skipped += 1;
                if skipped <= SKIP_AHEAD {
                    continue;
                }
                skipped = 0;
                self.poll_interval
            } else {
                skipped = 0;
                self.idle_wait(claimed_at).await
            };
            if !self.pause(shutdown, wait).await {
                return;
            }
            only.clear();
            // After a claim that was not full, the next one starts no sooner than the
            // queue's claim spacing after it, whatever ended the wait: under load a claim
            // then takes what several commits queued, rather than each commit waking every
            // node's claim loops. The spacing holds per claim loop, times the live
            // workers: the workers of a queue together claim about as often as one would,
            // each woken by the work its own node queued or by the others' wake-ups.
            let nodes = u32::try_from(self.limits.nodes()).unwrap_or(u32::MAX);
            let next = started + self.queue.claim_spacing().saturating_mul(nodes);
            if Instant::now() < next {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = sleep_until(next) => {}
                }
            }
        }
    }

    /// Starts the deliveries handed over until `shutdown`, each message's as soon as it
    /// arrives (giving some back is a round trip to the store). Those handed over as it
    /// stops are given back, so that other workers need not wait out their leases.
    async fn take_over(
        &self,
        mut handed: mpsc::UnboundedReceiver<Handed>,
        shutdown: &CancellationToken,
        tracker: &TaskTracker,
        finished: &mpsc::Sender<Finished>,
    ) {
        use futures_util::StreamExt;
        futures_util::stream::poll_fn(|cx| handed.poll_recv(cx))
            .take_until(shutdown.cancelled())
            .for_each_concurrent(None, |handed| {
                self.start_handed(handed, shutdown, tracker, finished)
            })
            .await;
        handed.close();
        let mut left = Vec::new();
        while let Ok(handed) = handed.try_recv() {
            if Instant::now() < handed.leased_at + self.hold {
                left.extend(
                    handed
                        .jobs
                        .iter()
                        .map(|job| (job.message.id.clone(), job.endpoint.id.clone())),
                );
            }
        }
        release(self.queue.as_ref(), left, self.clock.now()).await;
    }

    /// Starts the deliveries of one message handed over on the workers free, as a claim
    /// starts its own; those with no worker free, or whose endpoint or app has no room,
    /// wait in line for the claim loops, keeping their places.
    async fn start_handed(
        &self,
        handed: Handed,
        shutdown: &CancellationToken,
        tracker: &TaskTracker,
        finished: &mpsc::Sender<Finished>,
    ) {
        let Handed {
            mut places,
            jobs,
            leased_at,
        } = handed;
        // They start within the hold of their lease's start, as a claim's do, so that
        // each attempt ends before its lease does (should the create have been slow).
        let start_by = leased_at + self.hold;
        if Instant::now() >= start_by {
            tracing::warn!(
                deliveries = jobs.len(),
                "deliveries handed over too late to start within their lease; they are due again when it ends"
            );
            return;
        }
        let (mut started, mut queued) = (0, false);
        for job in jobs {
            // A free worker takes it at once, unless deliveries of its app wait already:
            // it goes behind them.
            let free = if self.handoff.waiting.holds(&job.endpoint.app_id) {
                None
            } else {
                Arc::clone(&self.handoff.permits).try_acquire_owned().ok()
            };
            let job = match free {
                Some(permit) => {
                    match self.spawn(job, permit, start_by, tracker, finished, shutdown) {
                        None => {
                            started += 1;
                            continue;
                        }
                        Some(job) => job,
                    }
                }
                None => job,
            };
            self.handoff.waiting.push(job, start_by, &mut places);
            queued = true;
        }
        hookline_core::metrics::metrics().record_handed(started, 0);
        if queued {
            self.wake.notify_one();
        }
    }

    /// Takes up to `most` more deliveries from the line into `taken`, as many of each app's
    /// as it has room for beside those already in `taken` and `claimed` from the store
    /// (none of `passed_over`); gives back those past their start, and adds to
    /// `passed_over` the apps whose deliveries stayed in line for want of room: the claim
    /// loop waits for their room as it does for apps at their share.
    async fn take_line(
        &self,
        most: usize,
        passed_over: &mut Vec<AppId>,
        taken: &mut Vec<Waiter>,
        claimed: &[DeliveryJob],
    ) {
        let line = self.handoff.waiting.take(most, |app| {
            if passed_over.contains(app) {
                return 0;
            }
            let already = taken
                .iter()
                .map(|waiter| &waiter.job)
                .chain(claimed)
                .filter(|job| job.endpoint.app_id == *app)
                .count();
            self.limits
                .room_of(std::slice::from_ref(app))
                .saturating_sub(already)
        });
        taken.extend(line.waiters);
        self.give_back_waiting(line.late).await;
        for app in line.full {
            if !passed_over.contains(&app) {
                passed_over.push(app);
            }
        }
    }

    /// Gives back deliveries taken out of the line unstarted (the worker stopping, or
    /// their start past), while their lease surely holds: one past its start by more than
    /// the hold is left to its lease, which another worker may meanwhile have taken over
    /// once it ran out.
    async fn give_back_waiting(&self, waiters: Vec<Waiter>) {
        if waiters.is_empty() {
            return;
        }
        let now = Instant::now();
        let keys: Vec<_> = waiters
            .iter()
            .filter(|waiter| now < waiter.start_by + self.hold)
            .map(Waiter::key)
            .collect();
        hookline_core::metrics::metrics().record_handed(0, waiters.len());
        tracing::debug!(
            deliveries = waiters.len(),
            given_back = keys.len(),
            "deliveries taken out of line unstarted"
        );
        release(self.queue.as_ref(), keys, self.clock.now()).await;
    }

    /// Starts each of `jobs` (with the time it must start by) that it admits, one of
    /// `permits` each; returns the keys of those to give back (not admitted, or beyond
    /// the permits). The permits left over are freed.
    fn start_all(
        &self,
        jobs: impl IntoIterator<Item = (DeliveryJob, Instant)>,
        mut permits: OwnedSemaphorePermit,
        tracker: &TaskTracker,
        finished: &mpsc::Sender<Finished>,
        shutdown: &CancellationToken,
    ) -> Vec<(MessageId, EndpointId)> {
        let mut given_back = Vec::new();
        for (job, start_by) in jobs {
            let key = (job.message.id.clone(), job.endpoint.id.clone());
            let started = permits.split(1).is_some_and(|permit| {
                self.spawn(job, permit, start_by, tracker, finished, shutdown)
                    .is_none()
            });
            if !started {
                given_back.push(key);
            }
        }
        given_back
    }

    /// Admits `job` and runs it in its own task; `job` back if it is not admitted.
    fn spawn(
        &self,
        job: DeliveryJob,
        permit: OwnedSemaphorePermit,
        start_by: Instant,
        tracker: &TaskTracker,
        finished: &mpsc::Sender<Finished>,
        shutdown: &CancellationToken,
    ) -> Option<DeliveryJob> {
        let now = Instant::now();
        let Some(ticket) = self.limits.admit(
            &job.endpoint.app_id,
            &job.endpoint.id,
            job.endpoint.throttle_rate,
            job.app_throttle_rate,
            now,
            start_by,
        ) else {
            tracing::debug!(
                msg_id = %job.message.id,
                endpoint_id = %job.endpoint.id,
                "endpoint or app busy; delivery not started"
            );
            return Some(job);
        };
        let deliverer = Arc::clone(&self.deliverer);
        let queue = Arc::clone(&self.queue);
        let clock = Arc::clone(&self.clock);
        let finished = finished.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let key = (job.message.id.clone(), job.endpoint.id.clone());
            match attempt(&deliverer, job, ticket, start_by, &shutdown).await {
                // Only fails if the recorder is gone, which it is not before we finish.
                Some(done) => drop(finished.send(done).await),
                None => release(queue.as_ref(), vec![key], clock.now()).await,
            }
        });
        None
    }

    /// Announces this worker and splits the rates among the live ones.
    async fn heartbeat(&self) {
        beat(self.queue.as_ref(), &self.limits, &self.owner).await;
    }

    /// How long to sleep when nothing more is due: until the next delivery falls due, or
    /// the poll interval, whichever is first.
    async fn idle_wait(&self, claimed_at: chrono::DateTime<Utc>) -> Duration {
        let now = self.clock.now();
        match self.queue.next_due(now).await {
            // Became due after our claim asked: go again at once.
            Ok(Some(due)) if due > claimed_at => (due - now)
                .to_std()
                .unwrap_or_default()
                .min(self.poll_interval),
            // Due before the claim yet not claimed (a disabled endpoint, a leased
            // delivery): nothing to do before the next poll.
            Ok(_) => self.poll_interval,
            Err(error) => {
                tracing::error!(%error, "reading the next due delivery failed");
                self.poll_interval
            }
        }
    }

    /// Waits for an app to drop below its share, for new work, or until `until`; `false`
    /// on shutdown. New work may be other apps' deliveries: `only` is then cleared, as it
    /// is at `until`.
    async fn wait_for_room(
        &self,
        shutdown: &CancellationToken,
        only: &mut Vec<AppId>,
        until: Instant,
    ) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = self.limits.freed.notified() => {}
            _ = self.wake.notified() => only.clear(),
            _ = sleep_until(until) => only.clear(),
        }
        true
    }

    /// Sleeps for `wait` or until woken; `false` on shutdown.
    async fn pause(&self, shutdown: &CancellationToken, wait: Duration) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = self.wake.notified() => true,
            _ = sleep(wait) => true,
        }
    }
}

/// One heartbeat: announces `owner` and tells `limits` how many workers are live. Should
/// it fail, the last count stays (one at first): a store that cannot be reached is not
/// claimed from either.
async fn beat(queue: &dyn DeliveryQueue, limits: &EndpointLimits, owner: &str) {
    match queue.heartbeat(owner, HEARTBEAT_TTL).await {
        Ok(nodes) => limits.set_nodes(nodes),
        Err(error) => tracing::warn!(%error, "announcing this worker failed"),
    }
}

/// Gives deliveries back unattempted, due again shortly. Should that fail, their leases
/// expire and they are claimed again all the same: never lost, only later.
async fn release(
    queue: &dyn DeliveryQueue,
    deliveries: Vec<(MessageId, EndpointId)>,
    now: chrono::DateTime<Utc>,
) {
    if deliveries.is_empty() {
        return;
    }
    let count = deliveries.len();
    let retry_at = now + chrono::Duration::from_std(RELEASE_DELAY).unwrap_or_default();
    if let Err(error) = queue.release(deliveries, retry_at).await {
        tracing::warn!(%error, count, "giving back deliveries failed; they wait for their leases");
    }
}

/// Waits for the endpoint's rate limit and a free in-flight slot, then makes the attempt.
/// `None` if it could not start in time or the engine is shutting down before it started:
/// the caller gives it back.
async fn attempt(
    deliverer: &Deliverer,
    job: DeliveryJob,
    ticket: Ticket,
    start_by: Instant,
    shutdown: &CancellationToken,
) -> Option<Finished> {
    if let Some(at) = ticket.not_before {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = sleep_until(at) => {}
        }
    }
    let in_flight = Arc::clone(&ticket.in_flight);
    let slot = tokio::select! {
        _ = shutdown.cancelled() => return None,
        slot = timeout_at(start_by, in_flight.acquire_owned()) => slot,
    };
    let Ok(Ok(_slot)) = slot else {
        tracing::debug!(
            msg_id = %job.message.id,
            endpoint_id = %job.endpoint.id,
            "endpoint stayed busy; delivery given back"
        );
        return None;
    };
    // Started: an attempt in flight runs to its end (bounded by the attempt timeout) even
    // during shutdown.
    let done = deliverer.deliver(&job).await;
    let attempt = &done.outcome.attempt;
    let success = attempt.status == MessageStatus::Success;
    hookline_core::metrics::metrics().record_attempt(
        success,
        u16::try_from(attempt.response_status_code).unwrap_or(0),
        Duration::from_millis(u64::try_from(attempt.response_duration_ms).unwrap_or(0)),
        success
            .then(|| (attempt.created_at - job.message.created_at).to_std().ok())
            .flatten(),
    );
    tracing::debug!(
        msg_id = %attempt.msg_id,
        endpoint_id = %attempt.endpoint_id,
        attempt_id = %attempt.id,
        status_code = attempt.response_status_code,
        error_kind = attempt.error_kind.map(|kind| kind.as_str()),
        duration_ms = attempt.response_duration_ms,
        next_attempt = ?done.outcome.next_attempt,
        "attempt made"
    );
    drop(ticket);
    Some(done)
}

/// Records finished attempts in group commits: one `record_outcomes` call for everything
/// that finished within a few milliseconds of each other. Operational events go into the
/// same commit, as messages of the outcomes that caused them.
async fn record(
    queue: Arc<dyn DeliveryQueue>,
    mut finished: mpsc::Receiver<Finished>,
    mut announcer: Option<Announcer>,
    wake: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(GROUP_MAX);
    while finished.recv_many(&mut batch, GROUP_MAX).await > 0 {
        let window = Instant::now() + GROUP_WINDOW;
        while batch.len() < GROUP_MAX {
            let room = GROUP_MAX - batch.len();
            match timeout_at(window, finished.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        // Endpoints this batch announces disabled.
        let mut announcing = Vec::new();
        let outcomes: Vec<AttemptOutcome> = batch
            .drain(..)
            .map(|mut done| {
                if let Some(announcer) = announcer.as_mut() {
                    done.outcome.messages = announcer.messages(done.events, &mut announcing);
                }
                done.outcome
            })
            .collect();
        let queued = outcomes
            .iter()
            .any(|o| o.next_attempt.is_some() || !o.messages.is_empty());
        if !commit(queue.as_ref(), outcomes).await {
            continue;
        }
        if queued {
            // A retry or an operational event may now be due before whatever the claim
            // loop is sleeping for.
            wake.notify_one();
        }
        if let Some(announcer) = announcer.as_mut() {
            announcer.committed(announcing);
        }
    }
}

/// Records `outcomes`, trying a few times; `false` if some could not be recorded. Should
/// the batch keep failing, its outcomes are recorded one by one, so that one outcome the
/// store cannot take holds back no other (theirs are other tenants' deliveries).
async fn commit(queue: &dyn DeliveryQueue, outcomes: Vec<AttemptOutcome>) -> bool {
    let count = outcomes.len();
    let outcomes: Arc<[AttemptOutcome]> = outcomes.into();
    let mut backoff = Duration::from_millis(50);
    for try_number in 1..=RECORD_TRIES {
        match queue.record_outcomes(Arc::clone(&outcomes)).await {
            Ok(()) => return true,
            Err(error) if try_number == RECORD_TRIES => {
                tracing::error!(%error, count, "recording a batch of attempts failed");
            }
            Err(error) => {
                tracing::warn!(%error, count, try_number, "recording attempts failed; trying again");
                sleep(backoff).await;
                backoff *= 4;
            }
        }
    }
    if count == 1 {
        tracing::error!(
            "an attempt could not be recorded; its delivery is retried when its lease expires"
        );
        return false;
    }
    let mut recorded = 0;
    for outcome in outcomes.iter() {
        match queue.record_outcomes(Arc::from([outcome.clone()])).await {
            Ok(()) => recorded += 1,
            Err(error) => tracing::error!(
                %error,
                msg_id = %outcome.attempt.msg_id,
                endpoint_id = %outcome.attempt.endpoint_id,
                "an attempt could not be recorded; its delivery is retried when its lease expires"
            ),
        }
    }
    recorded == count
}
