//! The process's Prometheus metrics. Counters and histograms are recorded where things
//! happen (the delivery engine, the receiving side, the SQLite writer) into one registry
//! per process ([`metrics`]); `GET /metrics` sets the gauges read at scrape time (queue
//! depth, connection pool, memory) and encodes it all in the OpenMetrics text format.

use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The metrics of this process.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    outcome: &'static str,
    status_class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InboundLabels {
    source_type: String,
    verdict: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FateLabels {
    fate: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// Deliveries by where they stand, at one moment ([`crate::store::DeliveryQueue::queue_depth`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Due now and not leased.
    pub due: u64,
    /// Held by a worker: an attempt in flight, or about to be.
    pub leased: u64,
    /// Waiting for a retry's time.
    pub scheduled: u64,
}

/// A connection pool's use, at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatus {
    pub in_use: u64,
    pub idle: u64,
    pub max: u64,
}

/// What a scrape reads at its moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub queue: QueueDepth,
    pub pool: Option<PoolStatus>,
    /// Jobs tracked that have not ended.
    pub open_jobs: u64,
}

/// The registry and its metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    attempts: Family<AttemptLabels, Counter>,
    attempt_seconds: Histogram,
    delivered_after_seconds: Histogram,
    inbound: Family<InboundLabels, Counter>,
    commit_batch: Histogram,
    claims: Counter,
    claimed: Family<FateLabels, Counter>,
    handed: Family<FateLabels, Counter>,
    poll_claims: Counter,
    claimed_polls: Counter,
    queue: Family<StateLabels, Gauge>,
    pool: Family<StateLabels, Gauge>,
    open_jobs: Gauge,
    resident_bytes: Gauge,
    /// One scrape sets the gauges and encodes at a time.
    scrape: Mutex<()>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("hookline");
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "attempts",
            "Delivery attempts by outcome and HTTP status class (none: no answer)",
            attempts.clone(),
        );
        // 1 ms to about 65 s.
        let attempt_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register(
            "attempt_duration_seconds",
            "How long delivery attempts took, answer included",
            attempt_seconds.clone(),
        );
        // 1 ms to about 4.5 hours: retries included.
        let delivered_after_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 25));
        registry.register(
            "delivered_after_seconds",
            "From a message's creation to its successful delivery, per endpoint",
            delivered_after_seconds.clone(),
        );
        let inbound = Family::<InboundLabels, Counter>::default();
        registry.register(
            "inbound_requests",
            "Requests received at sources, by source type and verdict",
            inbound.clone(),
        );
        let commit_batch = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "commit_batch_size",
            "Writes committed together by one group commit (SQLite's writer; PostgreSQL's message creates, received requests and job writes)",
            commit_batch.clone(),
        );
        let claims = Counter::default();
        registry.register(
            "claims",
            "Claims of due deliveries this worker made",
            claims.clone(),
        );
        let claimed = Family::<FateLabels, Counter>::default();
        registry.register(
            "claimed_deliveries",
            "Deliveries claimed: started, or given back by the claim unattempted (their endpoint or app at its limits)",
            claimed.clone(),
        );
        let handed = Family::<FateLabels, Counter>::default();
        registry.register(
            "handed_deliveries",
            "Deliveries leased to this worker as their messages were created, without a claim: started, or given back unattempted (their endpoint or app at its limits)",
            handed.clone(),
        );
        let poll_claims = Counter::default();
        registry.register(
            "poll_claims",
            "Claims of due job polls this node's tracker made",
            poll_claims.clone(),
        );
        let claimed_polls = Counter::default();
        registry.register(
            "claimed_polls",
            "Due job polls this node's tracker claimed",
            claimed_polls.clone(),
        );
        let queue = Family::<StateLabels, Gauge>::default();
        registry.register(
            "deliveries",
            "Deliveries waiting: due now, leased by a worker, or scheduled for a retry",
            queue.clone(),
        );
        let pool = Family::<StateLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database connections: in use, idle, and the most the pool opens",
            pool.clone(),
        );
        let open_jobs = Gauge::default();
        registry.register(
            "open_jobs",
            "Jobs tracked that have not ended",
            open_jobs.clone(),
        );
        let resident_bytes = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of this process",
            resident_bytes.clone(),
        );
        Metrics {
            registry,
            attempts,
            attempt_seconds,
            delivered_after_seconds,
            inbound,
            commit_batch,
            claims,
            claimed,
            handed,
            poll_claims,
            claimed_polls,
            queue,
            pool,
            open_jobs,
            resident_bytes,
            scrape: Mutex::new(()),
        }
    }

    /// Counts a delivery attempt: `status` is the HTTP status (0: no answer);
    /// `delivered_after` is how long after its message's creation it succeeded.
    pub fn record_attempt(
        &self,
        success: bool,
        status: u16,
        took: Duration,
        delivered_after: Option<Duration>,
    ) {
        let status_class = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "none",
        };
        let outcome = if success { "success" } else { "fail" };
        self.attempts
            .get_or_create(&AttemptLabels {
                outcome,
                status_class,
            })
            .inc();
        self.attempt_seconds.observe(took.as_secs_f64());
        if let Some(after) = delivered_after {
            self.delivered_after_seconds.observe(after.as_secs_f64());
        }
    }

    /// Counts a request received at a source of `source_type`.
    pub fn record_inbound(&self, source_type: &str, verdict: &'static str) {
        self.inbound
            .get_or_create(&InboundLabels {
                source_type: source_type.to_owned(),
                verdict,
            })
            .inc();
    }

    /// Records how many writes one group commit committed.
    pub fn record_commit_batch(&self, writes: usize) {
        self.commit_batch.observe(writes as f64);
    }

    /// Counts a claim of due deliveries: how many it `started` and how many it
    /// `gave_back` unattempted.
    pub fn record_claim(&self, started: usize, gave_back: usize) {
        self.claims.inc();
        for (fate, count) in [("started", started), ("given_back", gave_back)] {
            self.claimed
                .get_or_create(&FateLabels { fate })
                .inc_by(count as u64);
        }
    }

    /// Counts deliveries handed to this worker as their message was created.
    pub fn record_handed(&self, started: usize, gave_back: usize) {
        for (fate, count) in [("started", started), ("given_back", gave_back)] {
            self.handed
                .get_or_create(&FateLabels { fate })
                .inc_by(count as u64);
        }
    }

    /// Counts a claim of due job polls that took `polls` of them.
    pub fn record_poll_claim(&self, polls: usize) {
        self.poll_claims.inc();
        self.claimed_polls.inc_by(polls as u64);
    }

    /// Every metric in the OpenMetrics text format, with the gauges set from `snapshot`.
    pub fn encode(&self, snapshot: &Snapshot) -> String {
        let _one = self
            .scrape
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        for (state, value) in [
            ("due", snapshot.queue.due),
            ("leased", snapshot.queue.leased),
            ("scheduled", snapshot.queue.scheduled),
        ] {
            self.queue
                .get_or_create(&StateLabels { state })
                .set(gauge(value));
        }
        if let Some(pool) = snapshot.pool {
            for (state, value) in [
                ("in_use", pool.in_use),
                ("idle", pool.idle),
                ("max", pool.max),
            ] {
                self.pool
                    .get_or_create(&StateLabels { state })
                    .set(gauge(value));
            }
        }
        self.open_jobs.set(gauge(snapshot.open_jobs));
        if let Some(bytes) = resident_bytes() {
            self.resident_bytes.set(gauge(bytes));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// This process's resident memory, from `/proc/self/statm` (Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_are_encoded_with_their_labels() {
        let metrics = Metrics::new();
        metrics.record_attempt(
            true,
            204,
            Duration::from_millis(3),
            Some(Duration::from_millis(40)),
        );
        metrics.record_attempt(false, 0, Duration::from_secs(15), None);
        metrics.record_inbound("github", "rejected");
        metrics.record_commit_batch(12);
        metrics.record_claim(5, 2);
        metrics.record_handed(4, 1);
        metrics.record_poll_claim(9);
        let text = metrics.encode(&Snapshot {
            queue: QueueDepth {
                due: 3,
                leased: 2,
                scheduled: 7,
            },
            pool: Some(PoolStatus {
                in_use: 1,
                idle: 3,
                max: 8,
            }),
            open_jobs: 5,
        });
        for line in [
            r#"hookline_attempts_total{outcome="success",status_class="2xx"} 1"#,
            r#"hookline_attempts_total{outcome="fail",status_class="none"} 1"#,
            "hookline_attempt_duration_seconds_count 2",
            "hookline_delivered_after_seconds_count 1",
            r#"hookline_inbound_requests_total{source_type="github",verdict="rejected"} 1"#,
            "hookline_commit_batch_size_sum 12.0",
            "hookline_claims_total 1",
            r#"hookline_claimed_deliveries_total{fate="given_back"} 2"#,
            r#"hookline_handed_deliveries_total{fate="started"} 4"#,
            "hookline_poll_claims_total 1",
            "hookline_claimed_polls_total 9",
            r#"hookline_deliveries{state="scheduled"} 7"#,
            r#"hookline_db_pool_connections{state="max"} 8"#,
            "hookline_open_jobs 5",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
