//! What a worker lets through to one endpoint: at most `throttle_rate` deliveries a
//! second (a token bucket), at most `max_in_flight_per_endpoint` requests at once, and a
//! bounded number of claimed deliveries waiting for either, so that one slow or throttled
//! endpoint cannot hold all of the worker's capacity.
//!
//! The same holds one level up: one application (one tenant) holds at most a share of the
//! worker, whatever its endpoints do. Twenty endpoints of one app that hang until the
//! attempt timeout would otherwise take every worker (each endpoint's own bound is far
//! from the whole worker, but twenty of them are not), and every other app's deliveries
//! would wait for the timeouts (issue 16: 13.5 s). An app's share is half of the workers
//! the other apps leave free: alone it may use half the worker; a second busy app half of
//! the rest, and so on, so that however many apps are stuck, there is always room for one
//! more (until each is down to the floor of one endpoint's in-flight bound). A delivery
//! over its app's share is not admitted: it is given back rather than kept waiting on a
//! worker.
//!
//! An application's `throttle_rate` limits its deliveries a second across all its
//! endpoints: a second token bucket, per app, that a delivery must also get a slot from.
//! Its slot is the later of the two buckets' next ones, taken in both.
//!
//! Rates hold in total over the workers sharing a queue, not per worker: each worker
//! enforces the rate divided by the number of live workers ([`EndpointLimits::set_nodes`],
//! counted through heartbeats, see [`crate::dispatcher`]). With `k` workers, each bucket
//! (burst one) lets through at most `rate / k * T + 1` in any `T` seconds, so an endpoint or
//! app receives at most `rate * T + k` in total, as long as the count is right. When a
//! worker joins, the others learn of it within a heartbeat, so for that long the total may
//! reach `(k + 1) / k` of the rate; when one dies, the others keep dividing by its count
//! until its heartbeat expires, sending less than the rate, never more. A worker with no
//! deliveries for an endpoint still counts, so an endpoint whose deliveries are not spread
//! over every worker gets less than its rate: a rate is a ceiling, not a promise.
//!
//! A claimed delivery is only admitted if it can start before its lease runs short;
//! otherwise it is given back, due again shortly (or, should that fail, its lease expires
//! and it is claimed again). Nothing is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hookline_core::id::{AppId, EndpointId};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Past this many tracked endpoints, idle ones are forgotten when a new one arrives.
const PRUNE_AT: usize = 1024;

/// Tokens refill continuously at `rate` per second up to `burst`; each delivery takes
/// one. A delivery may reserve a token that has not refilled yet: it then waits for it.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    /// May go negative: tokens promised to waiting deliveries.
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            updated: now,
        }
    }

    /// Changes the rate from now on (an endpoint's `throttle_rate` was edited).
    pub fn set_rate(&mut self, rate: f64, now: Instant) {
        self.refill(now);
        self.rate = rate;
    }

    /// Reserves the next token and returns when it can be used, unless that is later
    /// than `latest`, in which case nothing is reserved. (Admission checks two buckets
    /// before taking from either, with [`TokenBucket::ready_at`] and [`TokenBucket::take`];
    /// this is the one-bucket case.)
    #[cfg(test)]
    pub fn reserve(&mut self, now: Instant, latest: Instant) -> Option<Instant> {
        let at = self.ready_at(now);
        if at > latest {
            return None;
        }
        self.take(at);
        Some(at)
    }

    /// When the next token can be used, without reserving it.
    pub fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens >= 1.0 {
            // Refilling never moves `updated` back: it is `now` or a later slot.
            self.updated
        } else {
            self.updated + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }

    /// Uses a token at `at`, no earlier than [`TokenBucket::ready_at`]: the next one is
    /// then ready `1 / rate` after `at`, however much later than its own slot `at` is.
    /// This is what keeps two buckets honest when a delivery goes at the later of their
    /// slots: neither lets the next delivery go early to make up for the wait.
    pub fn take(&mut self, at: Instant) {
        self.refill(at);
        self.tokens -= 1.0;
    }

    /// Whether the bucket is full again, i.e. forgetting it changes nothing.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }

    /// Brings the bucket to `now`; a bucket whose last token was taken at a later slot
    /// stays there (nothing refills before that slot).
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated = self.updated.max(now);
    }
}

/// One endpoint's limits as seen by this worker.
#[derive(Debug)]
struct Gate {
    bucket: Option<TokenBucket>,
    in_flight: Arc<Semaphore>,
    /// Admitted deliveries not yet finished: waiting or in flight.
    held: usize,
}

/// What is admitted: each endpoint's gate, and how many deliveries each app holds.
#[derive(Debug, Default)]
struct Admitted {
    gates: HashMap<EndpointId, Gate>,
    /// Admitted deliveries not yet finished, per app; apps holding none are absent.
    apps: HashMap<AppId, usize>,
    /// The token buckets of throttled apps (their `throttle_rate`), kept while they hold
    /// deliveries or have not refilled.
    app_buckets: HashMap<AppId, TokenBucket>,
    /// The sum of `apps`.
    total: usize,
}

/// Per-endpoint and per-app admission for one worker.
#[derive(Debug)]
pub(crate) struct EndpointLimits {
    admitted: Mutex<Admitted>,
    max_in_flight: usize,
    /// Deliveries held per endpoint at most, whatever its rate.
    max_held: usize,
    /// The worker's size (`concurrency`), which apps share.
    workers: usize,
    /// The least share of an app, however busy the others.
    min_per_app: usize,
    /// Live workers sharing the queue (this one included), among which every rate is
    /// split; one until told otherwise.
    nodes: AtomicUsize,
    /// Told when an app that held its whole share drops below it: a claim loop that
    /// passed over apps at their share waits on it for room, rather than for the poll
    /// interval.
    pub freed: tokio::sync::Notify,
}

/// An admitted delivery: when it may start, and its claim on the endpoint's capacity.
#[derive(Debug)]
pub(crate) struct Ticket {
    /// Wait until then for the rate limit; `None` to go at once.
    pub not_before: Option<Instant>,
    /// Take a permit before sending: it bounds the requests in flight to the endpoint.
    pub in_flight: Arc<Semaphore>,
    _held: Held,
}

/// Counts an admitted delivery against its endpoint and its app until dropped.
#[derive(Debug)]
struct Held {
    limits: Arc<EndpointLimits>,
    app: AppId,
    endpoint: EndpointId,
}

impl Drop for Held {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut freed_a_share = false;
        let mut admitted = self.limits.lock();
        if let Some(gate) = admitted.gates.get_mut(&self.endpoint) {
            gate.held = gate.held.saturating_sub(1);
            if gate.held == 0 && gate.bucket.as_mut().is_none_or(|b| b.is_full(now)) {
                admitted.gates.remove(&self.endpoint);
            }
        }
        let others = admitted.total - admitted.apps.get(&self.app).copied().unwrap_or(0);
        let share = self.limits.app_share(others);
        if let Some(held) = admitted.apps.get_mut(&self.app) {
            // Claims pass over an app at its share; they look again once it drops below.
            freed_a_share = *held == share;
            *held = held.saturating_sub(1);
            if *held == 0 {
                admitted.apps.remove(&self.app);
                if admitted
                    .app_buckets
                    .get_mut(&self.app)
                    .is_some_and(|b| b.is_full(now))
                {
                    admitted.app_buckets.remove(&self.app);
                }
            }
            admitted.total = admitted.total.saturating_sub(1);
        }
        drop(admitted);
        // After the counts changed, so that the woken claim sees the room.
        if freed_a_share {
            self.limits.freed.notify_one();
        }
    }
}

impl EndpointLimits {
    /// Limits of `max_in_flight` requests at once per endpoint and `max_held` deliveries
    /// held per endpoint (waiting or in flight); apps share `workers` deliveries held, each
    /// at most half of what the others leave, and at least `min_per_app`.
    pub fn new(
        max_in_flight: usize,
        max_held: usize,
        workers: usize,
        min_per_app: usize,
    ) -> Arc<Self> {
        let max_in_flight = max_in_flight.max(1);
        Arc::new(EndpointLimits {
            admitted: Mutex::new(Admitted::default()),
            max_in_flight,
            max_held: max_held.max(max_in_flight),
            workers,
            min_per_app: min_per_app.max(1),
            nodes: AtomicUsize::new(1),
            freed: tokio::sync::Notify::new(),
        })
    }

    /// Sets how many live workers share the queue: from now on each rate is divided by
    /// `nodes` (at least one).
    pub fn set_nodes(&self, nodes: usize) {
        self.nodes.store(nodes.max(1), Ordering::Relaxed);
    }

    /// How many live workers share the queue, as last heard (at least one).
    pub fn nodes(&self) -> usize {
        self.nodes.load(Ordering::Relaxed)
    }

    /// This worker's share of `rate` (deliveries a second); `None` for unthrottled. A
    /// rate of 0 would stop deliveries for good; it means "unthrottled", like `None`.
    fn share(&self, rate: Option<u16>) -> Option<f64> {
        let nodes = self.nodes.load(Ordering::Relaxed).max(1) as f64;
        rate.filter(|&r| r > 0).map(|r| f64::from(r) / nodes)
    }

    /// Admits a delivery of `app` to `endpoint` (limited to `rate` per second, if any,
    /// and to the app's `app_rate` across its endpoints, if any; both in total over the
    /// live workers) if it can start by `start_by`; `None` if it cannot, for the caller
    /// to give back.
    ///
    /// The number of deliveries held per endpoint is bounded by `max_held`, or by what the
    /// rate lets start before `start_by` if that is more; per app by its share (see
    /// [`EndpointLimits::app_share`]), with no exception for rates: a throttled
    /// endpoint's waiting deliveries hold workers too.
    pub fn admit(
        self: &Arc<Self>,
        app: &AppId,
        endpoint: &EndpointId,
        rate: Option<u16>,
        app_rate: Option<u16>,
        now: Instant,
        start_by: Instant,
    ) -> Option<Ticket> {
        let rate = self.share(rate);
        let app_rate = self.share(app_rate);
        let mut admitted = self.lock();
        let app_held = admitted.apps.get(app).copied().unwrap_or(0);
        if app_held >= self.app_share(admitted.total - app_held) {
            return None;
        }
        // The app's next slot, reserved below only once the endpoint's is known too.
        let app_slot = match app_rate {
            None => {
                if !admitted.app_buckets.is_empty() {
                    admitted.app_buckets.remove(app);
                }
                None
            }
            Some(app_rate) => {
                let buckets = &mut admitted.app_buckets;
                if !buckets.contains_key(app) && buckets.len() >= PRUNE_AT {
                    buckets.retain(|_, bucket| !bucket.is_full(now));
                }
                let bucket = buckets
                    .entry(app.clone())
                    .or_insert_with(|| TokenBucket::new(app_rate, 1.0, now));
                bucket.set_rate(app_rate, now);
                let at = bucket.ready_at(now);
                if at > start_by {
                    return None;
                }
                Some(at)
            }
        };
        let Admitted {
            gates, app_buckets, ..
        } = &mut *admitted;
        if !gates.contains_key(endpoint) && gates.len() >= PRUNE_AT {
            gates.retain(|_, gate| {
                gate.held > 0 || gate.bucket.as_mut().is_some_and(|b| !b.is_full(now))
            });
        }
        let gate = gates.entry(endpoint.clone()).or_insert_with(|| Gate {
            bucket: None,
            in_flight: Arc::new(Semaphore::new(self.max_in_flight)),
            held: 0,
        });
        let window = start_by.saturating_duration_since(now).as_secs_f64();
        let rate_hold = rate.map_or(0.0, |r| (r * window).ceil()) as usize;
        if gate.held >= self.max_held.max(rate_hold) {
            return None;
        }
        let endpoint_slot = match rate {
            None => {
                gate.bucket = None;
                None
            }
            Some(rate) => {
                // A burst of one: deliveries are spaced evenly, never bunched.
                let bucket = gate
                    .bucket
                    .get_or_insert_with(|| TokenBucket::new(rate, 1.0, now));
                bucket.set_rate(rate, now);
                Some(bucket.ready_at(now))
            }
        };
        // The delivery goes at the later of the two slots, taken in both buckets.
        let at = endpoint_slot.max(app_slot);
        if at.is_some_and(|at| at > start_by) {
            return None;
        }
        if let Some(at) = at {
            if let Some(bucket) = gate.bucket.as_mut() {
                bucket.take(at);
            }
            if let Some(bucket) = app_buckets.get_mut(app) {
                bucket.take(at);
            }
        }
        let not_before = at.filter(|&at| at > now);
        gate.held += 1;
        let in_flight = Arc::clone(&gate.in_flight);
        match admitted.apps.get_mut(app) {
            Some(held) => *held += 1,
            None => {
                admitted.apps.insert(app.clone(), 1);
            }
        }
        admitted.total += 1;
        Some(Ticket {
            not_before,
            in_flight,
            _held: Held {
                limits: Arc::clone(self),
                app: app.clone(),
                endpoint: endpoint.clone(),
            },
        })
    }

    /// The apps that hold their whole share now: a claim passes over their deliveries,
    /// which would only be given back.
    pub fn saturated_apps(&self) -> Vec<AppId> {
        let admitted = self.lock();
        admitted
            .apps
            .iter()
            .filter(|&(_, &held)| held >= self.app_share(admitted.total - held))
            .map(|(app, _)| app.clone())
            .collect()
    }

    /// How many more deliveries `apps` may be admitted, between them.
    pub fn room_of(&self, apps: &[AppId]) -> usize {
        let admitted = self.lock();
        apps.iter()
            .map(|app| {
                let held = admitted.apps.get(app).copied().unwrap_or(0);
                self.app_share(admitted.total - held).saturating_sub(held)
            })
            .sum()
    }

    /// How many deliveries an app may hold while the other apps hold `others`: half of
    /// what they leave free, so that a new app always finds the other half; at least
    /// `min_per_app`, if that many are free.
    fn app_share(&self, others: usize) -> usize {
        let free = self.workers.saturating_sub(others);
        (free / 2).max(self.min_per_app).min(free)
    }

    /// Endpoints currently tracked.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().gates.len()
    }

    /// Apps currently holding deliveries.
    #[cfg(test)]
    fn apps(&self) -> usize {
        self.lock().apps.len()
    }

    fn lock(&self) -> MutexGuard<'_, Admitted> {
        // The maps stay consistent even if a holder panicked: every update is one step.
        self.admitted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_bucket_spaces_deliveries_at_its_rate() {
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(60);
        let mut bucket = TokenBucket::new(5.0, 1.0, t0);
        let slots: Vec<Duration> = (0..5)
            .map(|_| bucket.reserve(t0, far).unwrap() - t0)
            .collect();
        assert_eq!(slots, [ms(0), ms(200), ms(400), ms(600), ms(800)]);
    }

    #[test]
    fn a_bucket_refills_up_to_its_burst_only() {
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(60);
        let mut bucket = TokenBucket::new(10.0, 3.0, t0);
        for _ in 0..3 {
            assert_eq!(bucket.reserve(t0, far), Some(t0), "the burst goes at once");
        }
        assert_eq!(bucket.reserve(t0, far), Some(t0 + ms(100)));
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(10);
        assert!(bucket.is_full(later));
        for _ in 0..3 {
            assert_eq!(bucket.reserve(later, far), Some(later));
        }
        assert_eq!(bucket.reserve(later, far), Some(later + ms(100)));
    }

    #[test]
    fn a_bucket_refuses_slots_past_the_deadline_without_reserving() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(2.0, 1.0, t0);
        let deadline = t0 + ms(600);
        assert_eq!(bucket.reserve(t0, deadline), Some(t0));
        assert_eq!(bucket.reserve(t0, deadline), Some(t0 + ms(500)));
        assert_eq!(bucket.reserve(t0, deadline), None);
        assert_eq!(
            bucket.reserve(t0, deadline),
            None,
            "a refusal reserved nothing"
        );
        assert_eq!(
            bucket.reserve(t0, t0 + Duration::from_secs(5)),
            Some(t0 + ms(1000))
        );
    }

    #[test]
    fn a_rate_change_applies_from_now() {
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(60);
        let mut bucket = TokenBucket::new(1.0, 1.0, t0);
        assert_eq!(bucket.reserve(t0, far), Some(t0));
        bucket.set_rate(10.0, t0);
        assert_eq!(bucket.reserve(t0, far), Some(t0 + ms(100)));
    }

    #[test]
    fn endpoints_are_throttled_independently_and_forgotten_when_idle() {
        let app = AppId::new();
        let limits = EndpointLimits::new(16, 32, 128, 16);
        let (a, b) = (EndpointId::new(), EndpointId::new());
        let t0 = Instant::now();
        let start_by = t0 + Duration::from_secs(10);
        let first = limits.admit(&app, &a, Some(4), None, t0, start_by).unwrap();
        let second = limits.admit(&app, &a, Some(4), None, t0, start_by).unwrap();
        let other = limits.admit(&app, &b, Some(4), None, t0, start_by).unwrap();
        assert_eq!(first.not_before, None);
        assert_eq!(second.not_before, Some(t0 + ms(250)));
        assert_eq!(other.not_before, None, "b has its own bucket");
        assert!(Arc::ptr_eq(&first.in_flight, &second.in_flight));
        assert!(!Arc::ptr_eq(&first.in_flight, &other.in_flight));
        assert_eq!(limits.tracked(), 2);
        drop(other);
        assert_eq!(limits.tracked(), 2, "b's bucket has not refilled yet");
        let unthrottled = EndpointId::new();
        drop(
            limits
                .admit(&app, &unthrottled, None, None, t0, start_by)
                .unwrap(),
        );
        assert_eq!(
            limits.tracked(),
            2,
            "an idle unthrottled endpoint is forgotten"
        );
        drop((first, second));
    }

    #[test]
    fn held_deliveries_per_endpoint_are_bounded() {
        let app = AppId::new();
        let limits = EndpointLimits::new(2, 4, 128, 2);
        let slow = EndpointId::new();
        let t0 = Instant::now();
        let start_by = t0 + Duration::from_secs(10);
        let tickets: Vec<Ticket> = (0..4)
            .map(|_| limits.admit(&app, &slow, None, None, t0, start_by).unwrap())
            .collect();
        assert_eq!(tickets[0].in_flight.available_permits(), 2);
        assert!(
            limits
                .admit(&app, &slow, None, None, t0, start_by)
                .is_none(),
            "max_held are held at most"
        );
        assert!(
            limits
                .admit(&app, &EndpointId::new(), None, None, t0, start_by)
                .is_some()
        );
        drop(tickets);
        assert!(
            limits
                .admit(&app, &slow, None, None, t0, start_by)
                .is_some()
        );

        // A throttled endpoint holds what its rate lets start in time, and no more.
        let throttled = EndpointId::new();
        let held: Vec<Ticket> = (0..20)
            .map_while(|_| limits.admit(&app, &throttled, Some(1), None, t0, start_by))
            .collect();
        assert_eq!(held.len(), 10, "one a second for ten seconds");
        assert!(
            limits
                .admit(&app, &throttled, Some(0), None, t0, start_by)
                .is_none()
        );
    }

    #[test]
    fn held_deliveries_per_app_are_bounded_across_its_endpoints() {
        let limits = EndpointLimits::new(2, 4, 10, 1);
        let (noisy, quiet) = (AppId::new(), AppId::new());
        let t0 = Instant::now();
        let start_by = t0 + Duration::from_secs(10);
        // Five endpoints of one app, each far from its own bound: the app's share binds.
        let endpoints: Vec<EndpointId> = (0..5).map(|_| EndpointId::new()).collect();
        let held: Vec<Ticket> = endpoints
            .iter()
            .map(|endpoint| {
                limits
                    .admit(&noisy, endpoint, None, None, t0, start_by)
                    .unwrap()
            })
            .collect();
        for endpoint in &endpoints {
            assert!(
                limits
                    .admit(&noisy, endpoint, None, None, t0, start_by)
                    .is_none(),
                "the app holds its share"
            );
        }
        assert!(
            limits
                .admit(&noisy, &EndpointId::new(), None, None, t0, start_by)
                .is_none(),
            "a new endpoint of the same app gets nothing more"
        );
        let other = limits
            .admit(&quiet, &EndpointId::new(), None, None, t0, start_by)
            .expect("another app is admitted");
        assert_eq!(limits.apps(), 2);
        assert_eq!(limits.tracked(), 6, "a refusal tracks no new endpoint");
        // While the other app holds one, the noisy one's share is half of the nine left.
        let mut held = held;
        drop(held.pop());
        let again = |limits: &Arc<EndpointLimits>| {
            limits
                .admit(&noisy, &endpoints[0], None, None, t0, start_by)
                .is_some()
        };
        assert!(!again(&limits));
        drop(other);
        assert!(again(&limits), "alone again, it has its five");
        drop(held);
        assert_eq!(limits.apps(), 0, "apps holding nothing are forgotten");
        assert_eq!(limits.tracked(), 0);
    }

    #[test]
    fn each_busy_app_gets_half_of_what_the_others_leave() {
        let limits = EndpointLimits::new(64, 64, 16, 2);
        let t0 = Instant::now();
        let start_by = t0 + Duration::from_secs(10);
        // Each app fills its share on one endpoint, then is refused.
        let mut fill = |app: &AppId| {
            let endpoint = EndpointId::new();
            let held: Vec<Ticket> = (0..16)
                .map_while(|_| limits.admit(app, &endpoint, None, None, t0, start_by))
                .collect();
            held
        };
        let apps: Vec<AppId> = (0..5).map(|_| AppId::new()).collect();
        let shares: Vec<Vec<Ticket>> = apps.iter().map(&mut fill).collect();
        let sizes: Vec<usize> = shares.iter().map(Vec::len).collect();
        // 16 → 8 for the first, 4 of the 8 left, 2 of the 4 left; then the floor of 2,
        // which takes the last two; nothing is left for the fifth.
        assert_eq!(sizes, [8, 4, 2, 2, 0]);
        drop(shares);
        assert_eq!(limits.apps(), 0);
    }

    #[test]
    fn an_apps_rate_holds_across_its_endpoints() {
        let limits = EndpointLimits::new(16, 32, 128, 16);
        let app = AppId::new();
        let t0 = Instant::now();
        let start_by = t0 + Duration::from_secs(10);
        // Four unthrottled endpoints of an app limited to 4 a second: one slot each
        // 250 ms, whichever endpoint it goes to.
        let slots: Vec<Option<Instant>> = (0..4)
            .map(|_| {
                let ticket = limits
                    .admit(&app, &EndpointId::new(), None, Some(4), t0, start_by)
                    .unwrap();
                let slot = ticket.not_before;
                drop(ticket);
                slot
            })
            .collect();
        assert_eq!(
            slots,
            [
                None,
                Some(t0 + ms(250)),
                Some(t0 + ms(500)),
                Some(t0 + ms(750))
            ]
        );
        // Another app is not held back by it.
        let other = limits
            .admit(
                &AppId::new(),
                &EndpointId::new(),
                None,
                Some(4),
                t0,
                start_by,
            )
            .unwrap();
        assert_eq!(other.not_before, None);
        // Past what fits before `start_by`, deliveries are refused, reserving nothing.
        let soon = t0 + ms(900);
        assert!(
            limits
                .admit(&app, &EndpointId::new(), None, Some(4), t0, soon)
                .is_none()
        );
        let next = limits
            .admit(&app, &EndpointId::new(), None, Some(4), t0, start_by)
            .unwrap();
        assert_eq!(next.not_before, Some(t0 + ms(1000)));
    }

    #[test]
    fn a_delivery_goes_at_the_later_slot_and_takes_both() {
        let limits = EndpointLimits::new(16, 32, 128, 16);
        let app = AppId::new();
        let (slow, other) = (EndpointId::new(), EndpointId::new());
        let t0 = Instant::now();
        let start_by = t0 + Duration::from_secs(10);
        // The endpoint allows 1 a second, the app 10: the endpoint's slots bind.
        let admit = |endpoint: &EndpointId| {
            limits
                .admit(&app, endpoint, Some(1), Some(10), t0, start_by)
                .unwrap()
                .not_before
        };
        assert_eq!(admit(&slow), None);
        assert_eq!(admit(&slow), Some(t0 + ms(1000)));
        // The app's bucket was taken at 1 s: its next slot is 100 ms later, not at 100 ms
        // (it does not make up for the wait by bunching).
        assert_eq!(admit(&other), Some(t0 + ms(1100)));
        assert_eq!(admit(&slow), Some(t0 + ms(2000)));
    }

    #[test]
    fn rates_are_split_among_live_workers() {
        let limits = EndpointLimits::new(16, 32, 128, 16);
        let (app, endpoint) = (AppId::new(), EndpointId::new());
        let t0 = Instant::now();
        let start_by = t0 + Duration::from_secs(10);
        limits.set_nodes(3);
        let admit = |rate, app_rate| {
            limits
                .admit(&app, &endpoint, rate, app_rate, t0, start_by)
                .unwrap()
                .not_before
        };
        // 6 a second over three workers: 2 a second here.
        assert_eq!(admit(Some(6), None), None);
        assert_eq!(admit(Some(6), None), Some(t0 + ms(500)));
        // The app's rate is split too: 3 over three workers, one a second here; its
        // first slot is free, the endpoint's next is at 1 s.
        let other = EndpointId::new();
        let app_only = |app_rate| {
            limits
                .admit(&app, &other, None, app_rate, t0, start_by)
                .unwrap()
                .not_before
        };
        assert_eq!(app_only(Some(3)), None);
        assert_eq!(app_only(Some(3)), Some(t0 + ms(1000)));
        limits.set_nodes(0);
        assert_eq!(
            app_only(Some(3)),
            Some(t0 + ms(1000) + Duration::from_secs_f64(1.0 / 3.0)),
            "no fewer than one worker: 3 a second from the next slot"
        );
    }
}
