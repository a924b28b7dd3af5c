//! What a worker lets through to one endpoint: at most `throttle_rate` deliveries a
//! second (a token bucket), at most `max_in_flight_per_endpoint` requests at once, and a
//! bounded number of claimed deliveries waiting for either, so that one slow or throttled
//! endpoint cannot hold all of the worker's capacity.
//!
//! A claimed delivery is only admitted if it can start before its lease runs short;
//! otherwise it is left alone and its lease expires, after which it is claimed again.
//! Nothing is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hookline_core::id::EndpointId;
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
    /// than `latest`, in which case nothing is reserved.
    pub fn reserve(&mut self, now: Instant, latest: Instant) -> Option<Instant> {
        self.refill(now);
        let at = if self.tokens >= 1.0 {
            now
        } else {
            now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        };
        if at > latest {
            return None;
        }
        self.tokens -= 1.0;
        Some(at)
    }

    /// Whether the bucket is full again, i.e. forgetting it changes nothing.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }

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

/// Per-endpoint admission for one worker.
#[derive(Debug)]
pub(crate) struct EndpointLimits {
    gates: Mutex<HashMap<EndpointId, Gate>>,
    max_in_flight: usize,
    /// Deliveries held per endpoint at most, whatever its rate.
    max_held: usize,
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

/// Counts an admitted delivery against its endpoint until dropped.
#[derive(Debug)]
struct Held {
    limits: Arc<EndpointLimits>,
    endpoint: EndpointId,
}

impl Drop for Held {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut gates = self.limits.lock();
        if let Some(gate) = gates.get_mut(&self.endpoint) {
            gate.held = gate.held.saturating_sub(1);
            if gate.held == 0 && gate.bucket.as_mut().is_none_or(|b| b.is_full(now)) {
                gates.remove(&self.endpoint);
            }
        }
    }
}

impl EndpointLimits {
    /// Limits of `max_in_flight` requests at once per endpoint, and `max_held`
    /// deliveries held per endpoint (waiting or in flight).
    pub fn new(max_in_flight: usize, max_held: usize) -> Arc<Self> {
        let max_in_flight = max_in_flight.max(1);
        Arc::new(EndpointLimits {
            gates: Mutex::new(HashMap::new()),
            max_in_flight,
            max_held: max_held.max(max_in_flight),
        })
    }

    /// Admits a delivery to `endpoint` (limited to `rate` per second, if any) if it can
    /// start by `start_by`; `None` leaves it to its lease.
    ///
    /// The number of deliveries held per endpoint is bounded by `max_held`, or by what the
    /// rate lets start before `start_by` if that is more.
    pub fn admit(
        self: &Arc<Self>,
        endpoint: &EndpointId,
        rate: Option<u16>,
        now: Instant,
        start_by: Instant,
    ) -> Option<Ticket> {
        // A rate of 0 would stop the endpoint for good; it means "unthrottled", like None.
        let rate = rate.filter(|&r| r > 0).map(f64::from);
        let mut gates = self.lock();
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
        let not_before = match rate {
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
                let at = bucket.reserve(now, start_by)?;
                (at > now).then_some(at)
            }
        };
        gate.held += 1;
        Some(Ticket {
            not_before,
            in_flight: Arc::clone(&gate.in_flight),
            _held: Held {
                limits: Arc::clone(self),
                endpoint: endpoint.clone(),
            },
        })
    }

    /// Endpoints currently tracked.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<EndpointId, Gate>> {
        // The map stays consistent even if a holder panicked: every update is one step.
        self.gates
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
        let limits = EndpointLimits::new(16, 32);
        let (a, b) = (EndpointId::new(), EndpointId::new());
        let t0 = Instant::now();
        let start_by = t0 + Duration::from_secs(10);
        let first = limits.admit(&a, Some(4), t0, start_by).unwrap();
        let second = limits.admit(&a, Some(4), t0, start_by).unwrap();
        let other = limits.admit(&b, Some(4), t0, start_by).unwrap();
        assert_eq!(first.not_before, None);
        assert_eq!(second.not_before, Some(t0 + ms(250)));
        assert_eq!(other.not_before, None, "b has its own bucket");
        assert!(Arc::ptr_eq(&first.in_flight, &second.in_flight));
        assert!(!Arc::ptr_eq(&first.in_flight, &other.in_flight));
        assert_eq!(limits.tracked(), 2);
        drop(other);
        assert_eq!(limits.tracked(), 2, "b's bucket has not refilled yet");
        let unthrottled = EndpointId::new();
        drop(limits.admit(&unthrottled, None, t0, start_by).unwrap());
        assert_eq!(
            limits.tracked(),
            2,
            "an idle unthrottled endpoint is forgotten"
        );
        drop((first, second));
    }

    #[test]
    fn held_deliveries_per_endpoint_are_bounded() {
        let limits = EndpointLimits::new(2, 4);
        let slow = EndpointId::new();
        let t0 = Instant::now();
        let start_by = t0 + Duration::from_secs(10);
        let tickets: Vec<Ticket> = (0..4)
            .map(|_| limits.admit(&slow, None, t0, start_by).unwrap())
            .collect();
        assert_eq!(tickets[0].in_flight.available_permits(), 2);
        assert!(
            limits.admit(&slow, None, t0, start_by).is_none(),
            "max_held are held at most"
        );
        assert!(
            limits
                .admit(&EndpointId::new(), None, t0, start_by)
                .is_some()
        );
        drop(tickets);
        assert!(limits.admit(&slow, None, t0, start_by).is_some());

        // A throttled endpoint holds what its rate lets start in time, and no more.
        let throttled = EndpointId::new();
        let held: Vec<Ticket> = (0..20)
            .map_while(|_| limits.admit(&throttled, Some(1), t0, start_by))
            .collect();
        assert_eq!(held.len(), 10, "one a second for ten seconds");
        assert!(limits.admit(&throttled, Some(0), t0, start_by).is_none());
    }
}
