//! Deliveries handed to this node's worker as their messages are created, without a
//! claim. The API reserves room in the worker before it stores a message
//! ([`Handoff::reserve`]); the store leases the new deliveries to the worker in the
//! message's own transaction ([`CreateLease`]); after the commit the API hands them over
//! ([`Handoff::hand`]) and the worker starts them as if it had claimed them. A claim costs
//! a write of every row it takes and a read of its message and endpoint; this costs
//! neither, and the delivery starts a round trip sooner.
//!
//! Nothing is lost on the way: a leased delivery is due again when its lease ends, as a
//! claimed one is, should the worker stop (or the node die) before it is recorded. A
//! node started again under its name ends its old leases at once
//! ([`DeliveryQueue::release_owned`]), and takes nothing over until it has.
//!
//! [`DeliveryQueue::release_owned`]: hookline_core::store::DeliveryQueue::release_owned

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hookline_core::SharedClock;
use hookline_core::id::AppId;
use hookline_core::store::{CreateLease, DeliveryJob};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ratelimit::EndpointLimits;

/// The most deliveries one message hands over: a fan-out's first few go at once, the
/// rest wait for a claim like any due delivery, so that one large fan-out cannot take
/// every worker from the messages created beside it.
const MOST_PER_MESSAGE: usize = 16;
/// A create reserves at most this share of the worker's free room (and nothing once
/// less than this is free), so that the creates in flight together leave room for
/// claims.
const SHARE_OF_FREE: usize = 4;

/// The door between the API and this node's worker. Shut until the worker has started
/// (and ended its old leases), and again once it stops.
#[derive(Debug)]
pub struct Handoff {
    /// The worker's deliveries in flight: the claim loops take from the same permits.
    pub(crate) permits: Arc<Semaphore>,
    /// The worker's per-app and per-endpoint limits, which claims heed too.
    pub(crate) limits: Arc<EndpointLimits>,
    owner: String,
    lease: Duration,
    clock: SharedClock,
    /// Set once the worker takes deliveries over.
    door: OnceLock<(mpsc::UnboundedSender<Handed>, CancellationToken)>,
}

/// Room reserved in the worker for the deliveries of one message about to be created.
/// Dropped unused, the room is free again.
#[derive(Debug)]
pub struct Reservation {
    permits: OwnedSemaphorePermit,
    lease: CreateLease,
    /// When the lease was taken: its deliveries must start within the worker's hold of
    /// this, as a claim's must within the hold of the claim, to end before the lease.
    at: Instant,
}

impl Reservation {
    /// The lease to create the message's deliveries under ([`NewMessage::lease`]).
    ///
    /// [`NewMessage::lease`]: hookline_core::store::NewMessage::lease
    pub fn lease(&self) -> CreateLease {
        self.lease.clone()
    }

    /// This room and `other`'s together, for the deliveries of several messages created
    /// in one transaction (a received webhook's forwards).
    pub fn merge(&mut self, other: Reservation) {
        self.permits.merge(other.permits);
    }
}

/// Deliveries handed over, the room they run in, and when their lease was taken.
#[derive(Debug)]
pub(crate) struct Handed {
    pub permits: OwnedSemaphorePermit,
    pub jobs: Vec<DeliveryJob>,
    pub leased_at: Instant,
}

impl Handoff {
    pub(crate) fn new(
        concurrency: usize,
        limits: Arc<EndpointLimits>,
        owner: String,
        lease: Duration,
        clock: SharedClock,
    ) -> Self {
        Handoff {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            limits,
            owner,
            lease,
            clock,
            door: OnceLock::new(),
        }
    }

    /// Opens the door: deliveries handed over from now on arrive at `receiver` until
    /// `stop` is cancelled.
    pub(crate) fn open(&self, stop: CancellationToken) -> mpsc::UnboundedReceiver<Handed> {
        let (sender, receiver) = mpsc::unbounded_channel();
        if self.door.set((sender, stop)).is_err() {
            tracing::error!("the handoff was opened twice; the second worker takes nothing");
        }
        receiver
    }

    fn is_open(&self) -> bool {
        self.door
            .get()
            .is_some_and(|(sender, stop)| !stop.is_cancelled() && !sender.is_closed())
    }

    /// Reserves room for the deliveries of a message of `app`, if the worker is running
    /// and has any free, and the app has not taken its share: with it, the store leases
    /// them as it creates them. `None` queues them due, for a claim.
    pub fn reserve(&self, app: &AppId) -> Option<Reservation> {
        if !self.is_open() {
            return None;
        }
        let room = (self.permits.available_permits() / SHARE_OF_FREE)
            .min(MOST_PER_MESSAGE)
            .min(self.limits.room_of(std::slice::from_ref(app)));
        let permits = Arc::clone(&self.permits)
            .try_acquire_many_owned(u32::try_from(room).ok().filter(|n| *n > 0)?)
            .ok()?;
        let at = Instant::now();
        let until = self.clock.now() + chrono::Duration::from_std(self.lease).ok()?;
        Some(Reservation {
            lease: CreateLease {
                owner: self.owner.clone(),
                until,
                most: permits.num_permits(),
            },
            permits,
            at,
        })
    }

    /// Hands over the deliveries the store leased with `reservation`
    /// ([`CreatedMessage::leased`]), once they are committed. Should the worker have
    /// stopped meanwhile, they are due again when their leases end.
    ///
    /// [`CreatedMessage::leased`]: hookline_core::store::CreatedMessage::leased
    pub fn hand(&self, reservation: Reservation, leased: &[DeliveryJob]) {
        if leased.is_empty() {
            return;
        }
        let Some((sender, _)) = self.door.get() else {
            return;
        };
        let handed = Handed {
            permits: reservation.permits,
            jobs: leased.to_vec(),
            leased_at: reservation.at,
        };
        if sender.send(handed).is_err() {
            tracing::debug!("the worker stopped; handed deliveries wait for their leases");
        }
    }
}
