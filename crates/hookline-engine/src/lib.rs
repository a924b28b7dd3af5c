//! Hookline's delivery engine: it takes due deliveries from the [`DeliveryQueue`] and POSTs
//! signed webhooks to endpoints, at least once.
//!
//! A worker claims due deliveries in batches under a lease ([`DeliveryQueue::claim_due`]), never
//! more than it has free capacity for, so memory stays bounded whatever the backlog. The
//! deliveries of a message created on the worker's own node are leased to it as they are
//! created and handed over without a claim ([`Handoff`]); those with no worker free wait
//! in the worker's line, which claims take from first. Each delivery is admitted within
//! its app's share of the worker and its endpoint's bounds, or given back, then waits for its endpoint's rate limit and in-flight bound (`ratelimit`), is
//! signed with every valid key of the endpoint (Standard Webhooks, through
//! `hookline-signature`, the project's one signing implementation) and sent through a
//! client that refuses private and reserved addresses after DNS resolution and never
//! follows redirects ([`ssrf`], `http`). What happened is turned into the delivery's next
//! state by [`RetryPolicy::decide`], where all retry decisions live, and recorded in group
//! commits. Operational events (`message.attempt.exhausted` and friends) are messages of an
//! application of Hookline's own ([`provision`]), committed with the outcome that caused
//! them and delivered to the operator's endpoint like any other message.
//!
//! Several workers, in one process or many, can share a store: leases keep them apart,
//! and a dead worker's deliveries are claimed again once its leases expire. Throttle rates
//! (an endpoint's, and an app's across its endpoints) hold in total over the workers: each
//! announces itself every few seconds ([`DeliveryQueue::heartbeat`]) and enforces the rate
//! divided by the number of live workers (`ratelimit` gives the bound).
//!
//! The engine knows nothing of HTTP routing or SQL: it sees an `Arc<dyn DeliveryQueue>`, a
//! [`Clock`](hookline_core::Clock) it reads every time it decides by, a [`Notify`] that the API pokes after
//! queueing (and a test after moving a manual clock on), and a [`CancellationToken`] to stop.

mod delivery;
mod dispatcher;
#[cfg(test)]
mod fixture;
mod handoff;
mod http;
mod operational;
mod ratelimit;
pub mod ssrf;
pub mod track;

use std::sync::Arc;
use std::time::Duration;

use hookline_core::SharedClock;
use hookline_core::retry::RetryPolicy;
use hookline_core::store::DeliveryQueue;
use hookline_signature::Scheme;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use handoff::{Handoff, Reservation};
pub use http::without_credentials;
pub use operational::{OPERATIONAL_UID, Operational, OperationalEndpoint, provision};
pub use ssrf::Cidr;

use delivery::{Deliverer, OperationalRoute};
use dispatcher::Dispatcher;
use http::HttpClient;
use ratelimit::EndpointLimits;
use ssrf::Guard;

/// Errors of engine configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Text that is not a CIDR block.
    #[error("invalid CIDR {input:?}: {reason}")]
    InvalidCidr { input: String, reason: &'static str },
    /// A CIDR block with bits set after its prefix, as in `10.0.0.1/8`.
    #[error("invalid CIDR {input:?}: bits are set after the prefix; did you mean {network}?")]
    CidrHostBits { input: String, network: Cidr },
    /// A setting out of its range.
    #[error("invalid engine setting {field}: {reason}")]
    InvalidConfig {
        field: &'static str,
        reason: &'static str,
    },
    /// The operational endpoint's secret cannot sign Standard Webhooks.
    #[error("operational endpoint secret cannot sign")]
    OperationalSecret(#[source] hookline_signature::SecretError),
    /// The store refused the operational application or its endpoint ([`provision`]).
    #[error("cannot set up the operational endpoint")]
    OperationalSetup(#[source] hookline_core::Error),
    /// The HTTP client could not be built (its TLS backend failed to start).
    #[error("cannot build the http client")]
    HttpClient(#[source] rustls::Error),
}

/// How the engine delivers. [`Default`] gives the documented defaults; check a built
/// configuration with [`EngineConfig::validate`] before starting.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Longest an attempt may take, from connecting to reading the answer's excerpt.
    /// Default 15 s.
    pub attempt_timeout: Duration,
    /// The retry schedule. Default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, ±20 %.
    pub retry: RetryPolicy,
    /// Blocks that deliveries may reach even though they are private, loopback or
    /// otherwise special-purpose (e.g. `127.0.0.0/8` in development). Default: none.
    pub allowed_subnets: Vec<Cidr>,
    /// Deliveries this worker holds at once, waiting or in flight. One app holds at most
    /// half of what the other apps leave free (but at least `max_in_flight_per_endpoint`),
    /// so that its hanging endpoints cannot hold up other apps' deliveries. Default 256.
    pub concurrency: usize,
    /// Requests in flight to one endpoint at once. Default 16.
    pub max_in_flight_per_endpoint: usize,
    /// An endpoint that keeps exhausting messages with no success for this long is
    /// disabled. Default 5 days.
    pub disable_after: Duration,
    /// The application operational events become messages of ([`provision`] makes it);
    /// `None` to send none. Default `None`.
    pub operational: Option<Operational>,
    /// This worker's name in delivery leases; unique per running engine. Default
    /// `hookline-` and random hex.
    pub node_id: String,
    /// Most deliveries one claim takes. Default 128.
    pub batch_size: usize,
    /// Claim loops running side by side, so that the workers need not wait for one
    /// claim's round trip to the store before the next. Default 1.
    pub claimers: usize,
    /// Longest sleep between looks at the queue when nothing wakes the engine. Default 1 s.
    pub poll_interval: Duration,
    /// How much longer than the attempt timeout a claim's lease lasts. A delivery may
    /// wait up to half of it for its endpoint's rate limit or a free in-flight slot;
    /// past that it is given back, due again shortly.
    /// Default 30 s.
    pub lease_margin: Duration,
    /// Deliver over HTTPS only: an attempt to an `http://` URL (an endpoint made before
    /// this was turned on) fails at once, refused by the guard, without connecting, so
    /// nothing is ever sent in clear text. Default `false`.
    pub https_only: bool,
    /// Sign deliveries under the `svix-id`, `svix-timestamp` and `svix-signature` header
    /// names, as the open-source Svix server does, instead of Standard Webhooks'
    /// `webhook-*` (the same values; the SDKs' verifiers read either). Default `false`.
    pub svix_headers: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            attempt_timeout: Duration::from_secs(15),
            retry: RetryPolicy::default(),
            allowed_subnets: Vec::new(),
            // An embedded engine's; `hookline serve` takes config.default.toml's (1024).
            concurrency: 256,
            max_in_flight_per_endpoint: 16,
            disable_after: Duration::from_secs(5 * 24 * 60 * 60),
            operational: None,
            node_id: format!("hookline-{:016x}", rand::random::<u64>()),
            batch_size: 128,
            claimers: 1,
            poll_interval: Duration::from_secs(1),
            lease_margin: Duration::from_secs(30),
            https_only: false,
            svix_headers: false,
        }
    }
}

impl EngineConfig {
    /// How long a worker holds a delivery it claimed: the attempt, and the margin to
    /// record it in.
    fn lease(&self) -> Duration {
        self.attempt_timeout + self.lease_margin.max(MIN_LEASE_MARGIN)
    }

    /// Checks every setting. The operational endpoint's were checked by [`provision`].
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |field, reason| Err(Error::InvalidConfig { field, reason });
        if self.attempt_timeout.is_zero() {
            return invalid("attempt_timeout", "must be longer than zero");
        }
        if self.concurrency == 0 {
            return invalid("concurrency", "must be at least 1");
        }
        if self.max_in_flight_per_endpoint == 0 {
            return invalid("max_in_flight_per_endpoint", "must be at least 1");
        }
        if self.claimers == 0 {
            return invalid("claimers", "must be at least 1");
        }
        if self.batch_size == 0 {
            return invalid("batch_size", "must be at least 1");
        }
        if self.poll_interval.is_zero() {
            return invalid("poll_interval", "must be longer than zero");
        }
        if self.lease_margin < MIN_LEASE_MARGIN {
            return invalid("lease_margin", "must be at least one second");
        }
        if self.node_id.is_empty() {
            return invalid("node_id", "must not be empty");
        }
        Ok(())
    }
}

/// The least lease margin: attempts must be recorded before their lease runs out.
const MIN_LEASE_MARGIN: Duration = Duration::from_secs(1);

/// The delivery engine of one worker. Build it with [`Engine::new`], then [`Engine::run`]
/// it until shutdown.
#[derive(Debug)]
pub struct Engine {
    queue: Arc<dyn DeliveryQueue>,
    config: EngineConfig,
    wake: Arc<Notify>,
    clock: SharedClock,
    client: HttpClient,
    handoff: Arc<Handoff>,
}

impl Engine {
    /// An engine delivering from `queue`, reading the time from `clock`. `wake` is the
    /// [`Notify`] the API calls `notify_one()` on after queueing deliveries, so they go out
    /// without waiting for a poll.
    ///
    /// Out-of-range settings are raised to their least valid value. Call
    /// [`EngineConfig::validate`] first to refuse them instead.
    ///
    /// # Panics
    ///
    /// If the HTTP client cannot be built, which only happens when the TLS backend fails
    /// to initialise.
    pub fn new(
        queue: Arc<dyn DeliveryQueue>,
        config: EngineConfig,
        wake: Arc<Notify>,
        clock: SharedClock,
    ) -> Self {
        let client = HttpClient::guarded(Guard::new(config.allowed_subnets.clone()))
            .expect("the delivery http client builds from a static configuration")
            .https_only(config.https_only);
        // One endpoint may hold at most half the worker: a slow one cannot starve the
        // rest, a fast one can still take a burst. One app may hold at most half of what
        // the other apps leave free (and at least one endpoint's in-flight bound), so that
        // twenty hanging endpoints of one tenant leave the other half to everyone else
        // (issue 16).
        let limits = EndpointLimits::new(
            config.max_in_flight_per_endpoint,
            (config.concurrency / 2).max(2 * config.max_in_flight_per_endpoint),
            config.concurrency.max(1),
            config.max_in_flight_per_endpoint,
        );
        let handoff = Arc::new(Handoff::new(
            config.concurrency,
            limits,
            config.node_id.clone(),
            config.lease(),
            Arc::clone(&clock),
        ));
        Engine {
            queue,
            config,
            wake,
            clock,
            client,
            handoff,
        }
    }

    /// Where the API hands this worker the deliveries of the messages it creates
    /// ([`Handoff`]); shut until [`Engine::run`] has started.
    pub fn handoff(&self) -> Arc<Handoff> {
        Arc::clone(&self.handoff)
    }

    /// Delivers until `shutdown` is cancelled. Then it stops claiming, lets attempts in
    /// flight finish (each within the attempt timeout), records them (with the operational
    /// events they cause), and returns. Deliveries claimed but not started are left to
    /// their leases.
    ///
    /// # Panics
    ///
    /// As [`Engine::new`], if the operational endpoint's HTTP client cannot be built.
    pub async fn run(self, shutdown: CancellationToken) {
        let config = self.config;
        let lease_margin = config.lease_margin.max(MIN_LEASE_MARGIN);
        let lease = config.lease();
        let route = config.operational.as_ref().map(|ops| OperationalRoute {
            app_id: ops.app_id.clone(),
            url: ops.url.clone(),
            client: HttpClient::trusted()
                .expect("the operational http client builds from a static configuration"),
        });
        // Deliveries in flight when their endpoint was disabled end within a lease: until
        // then, they do not announce it again.
        let announcer = config
            .operational
            .map(|ops| operational::Announcer::new(ops, lease));
        let dispatcher = Dispatcher {
            queue: self.queue,
            clock: Arc::clone(&self.clock),
            deliverer: Arc::new(Deliverer {
                client: self.client,
                clock: self.clock,
                retry: config.retry,
                attempt_timeout: config.attempt_timeout,
                disable_after: config.disable_after,
                scheme: if config.svix_headers {
                    Scheme::Svix
                } else {
                    Scheme::Standard
                },
                operational: route,
            }),
            limits: Arc::clone(&self.handoff.limits),
            wake: self.wake,
            handoff: self.handoff,
            owner: config.node_id,
            lease,
            hold: lease_margin / 2,
            concurrency: config.concurrency.max(1),
            batch_size: config.batch_size.max(1),
            claimers: config.claimers.max(1),
            poll_interval: config.poll_interval.max(Duration::from_millis(10)),
        };
        // A node restarted under its name ends the leases its previous life held.
        match dispatcher.queue.release_owned(&dispatcher.owner).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(
                owner = dispatcher.owner,
                released,
                "released the deliveries this node held before it stopped"
            ),
            Err(error) => {
                tracing::warn!(%error, "releasing this node's old leases failed; they run out instead")
            }
        }
        tracing::info!(owner = dispatcher.owner, "delivery engine started");
        dispatcher.run(shutdown, announcer).await;
        tracing::info!("delivery engine stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_unique_per_engine() {
        let config = EngineConfig::default();
        assert_eq!(config.validate().ok(), Some(()));
        assert_eq!(config.attempt_timeout, Duration::from_secs(15));
        assert_eq!(config.concurrency, 256);
        assert_eq!(config.max_in_flight_per_endpoint, 16);
        assert_eq!(config.disable_after, Duration::from_secs(432_000));
        assert_ne!(config.node_id, EngineConfig::default().node_id);
    }

    #[test]
    fn validation_names_the_bad_setting() {
        let field = |config: EngineConfig| match config.validate() {
            Err(Error::InvalidConfig { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let base = EngineConfig::default;
        assert_eq!(
            field(EngineConfig {
                concurrency: 0,
                ..base()
            }),
            "concurrency"
        );
        assert_eq!(
            field(EngineConfig {
                claimers: 0,
                ..base()
            }),
            "claimers"
        );
        assert_eq!(
            field(EngineConfig {
                batch_size: 0,
                ..base()
            }),
            "batch_size"
        );
        assert_eq!(
            field(EngineConfig {
                attempt_timeout: Duration::ZERO,
                ..base()
            }),
            "attempt_timeout"
        );
        assert_eq!(
            field(EngineConfig {
                lease_margin: Duration::from_millis(10),
                ..base()
            }),
            "lease_margin"
        );
    }
}
