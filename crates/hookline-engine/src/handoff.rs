//! Deliveries handed to this node's worker as their messages are created, without a
//! claim. The API reserves room in the worker before it stores a message
//! ([`Handoff::reserve`]); the store leases the new deliveries to the worker in the
//! message's own transaction ([`CreateLease`]); after the commit the API hands them over
//! ([`Handoff::hand`]) and the worker starts them as if it had claimed them. A claim costs
//! a write of every row it takes and a read of its message and endpoint; this costs
//! neither, and the delivery starts a round trip sooner.
//!
//! The room reserved is a place in the worker's line of waiting deliveries, not a free
//! worker: a fan-out's deliveries are handed over whole (up to [`MOST_PER_MESSAGE`]) even
//! while every worker is busy, and those that cannot start at once (no worker free, or
//! their app or endpoint at its limits) wait in that line ([`Waiting`]), one line per
//! app, which the claim loops take from, within each app's room, before they claim from
//! the store, starting with another app's line each time. The line has
//! [`LINE_PER_WORKER`] places for each worker. While the first of an app's line has
//! waited longer than [`BEHIND_AFTER`], that app's creates lease nothing: the worker is behind with it, and what they queue goes to the
//! store, where claims take the oldest due first.
//!
//! Nothing is lost on the way: a leased delivery is due again when its lease ends, as a
//! claimed one is, should the worker stop (or the node die) before it is recorded. One
//! that could not start within the worker's hold of its lease is given back when a claim
//! loop next looks at the line (within a poll interval), due again shortly. A node started again under its name ends its old leases at once
//! ([`DeliveryQueue::release_owned`]), and takes nothing over until it has.
//!
//! [`DeliveryQueue::release_owned`]: hookline_core::store::DeliveryQueue::release_owned

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use hookline_core::SharedClock;
use hookline_core::id::{AppId, EndpointId, MessageId};
use hookline_core::store::{CreateLease, DeliveryJob};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ratelimit::EndpointLimits;

/// The most deliveries one message hands over: a fan-out to more endpoints hands over
/// this many, and the rest wait for a claim like any due delivery.
const MOST_PER_MESSAGE: usize = 128;
/// A create reserves at most this share of the places left (and none once fewer are
/// left), before it knows how many endpoints its message goes to: the creates in flight
/// beside it find places too.
const SHARE_OF_PLACES: usize = 4;
/// Places in the line for each worker: a burst of fan-outs is handed over whole, and
/// drains through the workers as they come free. A place holds a delivery's row and
/// shares its message and endpoint with the others of the same, a few hundred bytes.
const LINE_PER_WORKER: usize = 32;
/// How long the first of an app's line may have waited before the app's creates stop
/// leasing: the worker is behind with it. Its deliveries queued in the store meanwhile
/// (retries, those given back, those of creates that found no place) are claimed oldest
/// due first, and claims take from the line first (the store gets its half only every so
/// often, see the dispatcher): this bounds how long a fresh fan-out's deliveries can go
/// before them.
const BEHIND_AFTER: Duration = Duration::from_secs(1);

/// The door between the API and this node's worker. Shut until the worker has started
/// (and ended its old leases), and again once it stops.
#[derive(Debug)]
pub struct Handoff {
    /// The worker's deliveries in flight: the claim loops take from the same permits.
    pub(crate) permits: Arc<Semaphore>,
    /// The worker's per-app and per-endpoint limits, which claims heed too.
    pub(crate) limits: Arc<EndpointLimits>,
    /// Deliveries handed over that could not start at once.
    pub(crate) waiting: Waiting,
    owner: String,
    lease: Duration,
    clock: SharedClock,
    /// Set once the worker takes deliveries over.
    door: OnceLock<(mpsc::UnboundedSender<Handed>, CancellationToken)>,
}

/// Room reserved in the worker's line for the deliveries of one message about to be
/// created. Dropped unused, the room is free again.
#[derive(Debug)]
pub struct Reservation {
    places: OwnedSemaphorePermit,
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
        self.places.merge(other.places);
    }
}

/// Deliveries handed over, their places in the line, and when their lease was taken.
#[derive(Debug)]
pub(crate) struct Handed {
    pub places: OwnedSemaphorePermit,
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
            waiting: Waiting::new(concurrency.saturating_mul(LINE_PER_WORKER)),
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

    /// Reserves places in the worker's line for the deliveries of a message of `app`, if
    /// the worker is running and not behind with the app's deliveries (see the module's
    /// documentation): with them, the store leases the deliveries as it creates them.
    /// `None` queues them due, for a claim.
    pub fn reserve(&self, app: &AppId) -> Option<Reservation> {
        if !self.is_open() || self.waiting.closed_to(app) {
            return None;
        }
        let places =
            (self.waiting.places.available_permits() / SHARE_OF_PLACES).min(MOST_PER_MESSAGE);
        let places = Arc::clone(&self.waiting.places)
            .try_acquire_many_owned(u32::try_from(places).ok().filter(|n| *n > 0)?)
            .ok()?;
        let at = Instant::now();
        let until = self.clock.now() + chrono::Duration::from_std(self.lease).ok()?;
        Some(Reservation {
            lease: CreateLease {
                owner: self.owner.clone(),
                until,
                most: places.num_permits(),
            },
            places,
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
            places: reservation.places,
            jobs: leased.to_vec(),
            leased_at: reservation.at,
        };
        if sender.send(handed).is_err() {
            tracing::debug!("the worker stopped; handed deliveries wait for their leases");
        }
    }
}

/// A delivery handed over that waits for a worker, keeping its place in the line.
#[derive(Debug)]
pub(crate) struct Waiter {
    pub job: DeliveryJob,
    /// When it must have started by, as a claimed delivery must (the worker's hold of
    /// its lease).
    pub start_by: Instant,
    queued_at: Instant,
    /// Its place in line (none only should a handed delivery have had no place of its
    /// own, which a reservation prevents).
    _place: Option<OwnedSemaphorePermit>,
}

impl Waiter {
    pub fn key(&self) -> (MessageId, EndpointId) {
        (self.job.message.id.clone(), self.job.endpoint.id.clone())
    }
}

/// What [`Waiting::take`] took from the line.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    /// To start.
    pub waiters: Vec<Waiter>,
    /// Past their start, to give back.
    pub late: Vec<Waiter>,
    /// The apps whose deliveries stayed in line for want of room.
    pub full: Vec<AppId>,
}

/// The worker's line of deliveries handed over that could not start at once: one line
/// per app, each in the order its deliveries came. Its places bound it: a create
/// reserves its deliveries' places before the store leases them.
#[derive(Debug)]
pub(crate) struct Waiting {
    places: Arc<Semaphore>,
    lines: Mutex<Lines>,
}

/// The apps' lines, and which app a take starts with: each take starts with the next, so
/// that no app's line waits behind another's for good.
#[derive(Debug, Default)]
struct Lines {
    apps: HashMap<AppId, VecDeque<Waiter>>,
    turn: usize,
}

impl Waiting {
    fn new(places: usize) -> Self {
        Waiting {
            places: Arc::new(Semaphore::new(places.max(1))),
            lines: Mutex::new(Lines::default()),
        }
    }

    fn lines(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `app`'s creates may lease no more: the first in its line has waited longer
    /// than [`BEHIND_AFTER`].
    fn closed_to(&self, app: &AppId) -> bool {
        self.lines()
            .apps
            .get(app)
            .and_then(VecDeque::front)
            .is_some_and(|first| first.queued_at.elapsed() > BEHIND_AFTER)
    }

    /// Puts `job` in its app's line, with its share of `places`.
    pub fn push(&self, job: DeliveryJob, start_by: Instant, places: &mut OwnedSemaphorePermit) {
        let place = places.split(1);
        let mut lines = self.lines();
        let app = job.endpoint.app_id.clone();
        lines.apps.entry(app).or_default().push_back(Waiter {
            job,
            start_by,
            queued_at: Instant::now(),
            _place: place,
        });
    }

    /// Whether deliveries of `app` wait in line: a new one of the app waits behind them.
    pub fn holds(&self, app: &AppId) -> bool {
        self.lines().apps.contains_key(app)
    }

    /// Takes up to `most` deliveries from the fronts of the apps' lines, no more of each
    /// app's than `room` says it has room for, and those past their start: the first are
    /// to start, the second to give back.
    pub fn take(&self, most: usize, mut room: impl FnMut(&AppId) -> usize) -> Taken {
        let now = Instant::now();
        let mut taken = Taken::default();
        let mut lines = self.lines();
        let mut apps: Vec<AppId> = lines.apps.keys().cloned().collect();
        if !apps.is_empty() {
            let turn = lines.turn % apps.len();
            apps.rotate_left(turn);
            lines.turn = lines.turn.wrapping_add(1);
        }
        for app in apps {
            let Some(line) = lines.apps.get_mut(&app) else {
                continue;
            };
            while line.front().is_some_and(|first| first.start_by <= now) {
                taken.late.extend(line.pop_front());
            }
            if !line.is_empty() && taken.waiters.len() < most {
                let left = most - taken.waiters.len();
                let room = room(&app);
                taken
                    .waiters
                    .extend(line.drain(..room.min(left).min(line.len())));
                if !line.is_empty() && room < left {
                    taken.full.push(app.clone());
                }
            }
            if line.is_empty() {
                lines.apps.remove(&app);
            }
        }
        taken
    }

    /// Empties the line, for a worker that stops.
    pub fn drain(&self) -> Vec<Waiter> {
        self.lines()
            .apps
            .drain()
            .flat_map(|(_, line)| line)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use hookline_core::clock::SystemClock;
    use hookline_core::id::{AppId, EndpointId, MessageId};
    use tokio::time::{Instant, advance};
    use tokio_util::sync::CancellationToken;

    use super::{BEHIND_AFTER, Handoff, Waiting};
    use crate::ratelimit::EndpointLimits;

    /// A job of message `msg` of `app` to endpoint `ep_<n>`.
    fn job(app: &str, msg: &str, n: usize) -> hookline_core::store::DeliveryJob {
        let mut job = crate::fixture::job();
        let mut endpoint = (*job.endpoint).clone();
        endpoint.app_id = AppId::from_string(app.into());
        endpoint.id = EndpointId::from_string(format!("ep_{n}"));
        job.endpoint = Arc::new(endpoint);
        let mut message = (*job.message).clone();
        message.id = MessageId::from_string(msg.into());
        job.message = Arc::new(message);
        job
    }

    fn names(waiters: &[super::Waiter]) -> Vec<String> {
        waiters
            .iter()
            .map(|w| format!("{}/{}", w.job.message.id, w.job.endpoint.id))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_line_gives_each_app_its_room_in_order_and_the_late_back() {
        let waiting = Waiting::new(10);
        let mut places = Arc::clone(&waiting.places)
            .try_acquire_many_owned(6)
            .unwrap();
        let later = Instant::now() + Duration::from_secs(10);
        for n in 0..3 {
            waiting.push(job("app_a", "msg_a", n), later, &mut places);
        }
        waiting.push(job("app_b", "msg_b", 0), later, &mut places);
        waiting.push(job("app_b", "msg_b", 1), later, &mut places);
        waiting.push(
            job("app_c", "msg_c", 0),
            Instant::now() + Duration::from_secs(1),
            &mut places,
        );
        drop(places);
        assert_eq!(
            waiting.places.available_permits(),
            4,
            "each waits in its place"
        );
        advance(Duration::from_secs(2)).await;

        let room = |app: &AppId| if app.as_str() == "app_a" { 2 } else { 5 };
        let mut taken = waiting.take(10, room);
        taken.waiters.sort_by_key(|w| w.job.message.id.to_string());
        assert_eq!(
            names(&taken.waiters),
            ["msg_a/ep_0", "msg_a/ep_1", "msg_b/ep_0", "msg_b/ep_1"]
        );
        assert_eq!(names(&taken.late), ["msg_c/ep_0"]);
        assert_eq!(taken.full, [AppId::from_string("app_a".into())]);
        drop(taken);
        assert_eq!(
            waiting.places.available_permits(),
            9,
            "the places taken are free"
        );

        // At most `most` in all; what is left keeps its order.
        let taken = waiting.take(1, |_| 5);
        assert_eq!(names(&taken.waiters), ["msg_a/ep_2"]);
        assert!(taken.full.is_empty());
        assert!(waiting.drain().is_empty());
    }

    #[tokio::test]
    async fn each_take_starts_with_another_apps_line() {
        let waiting = Waiting::new(8);
        let mut places = Arc::clone(&waiting.places)
            .try_acquire_many_owned(8)
            .unwrap();
        let later = Instant::now() + Duration::from_secs(10);
        for n in 0..4 {
            waiting.push(job("app_a", "msg_a", n), later, &mut places);
            waiting.push(job("app_b", "msg_b", n), later, &mut places);
        }
        let mut apps = Vec::new();
        for _ in 0..4 {
            let taken = waiting.take(1, |_| 5);
            apps.push(taken.waiters[0].job.endpoint.app_id.to_string());
        }
        apps.sort();
        assert_eq!(apps, ["app_a", "app_a", "app_b", "app_b"], "taken in turn");
    }

    #[tokio::test(start_paused = true)]
    async fn creates_lease_nothing_for_an_app_whose_line_has_waited_too_long() {
        // Two workers: 64 places in line, a quarter of them for one create.
        let limits = EndpointLimits::new(16, 32, 2, 16);
        let handoff = Handoff::new(
            2,
            limits,
            "node".into(),
            Duration::from_secs(60),
            Arc::new(SystemClock),
        );
        let app = AppId::from_string("app_a".into());
        let other = AppId::from_string("app_b".into());
        assert!(
            handoff.reserve(&app).is_none(),
            "shut until the worker runs"
        );
        let stop = CancellationToken::new();
        let _handed = handoff.open(stop.clone());

        let mut reserved = handoff.reserve(&app).expect("room in line");
        assert_eq!(reserved.lease().most, 16);
        assert_eq!(handoff.reserve(&other).map(|r| r.lease().most), Some(12));
        let later = Instant::now() + Duration::from_secs(30);
        handoff
            .waiting
            .push(job("app_a", "msg_a", 0), later, &mut reserved.places);
        drop(reserved);
        advance(BEHIND_AFTER + Duration::from_millis(1)).await;
        assert!(handoff.reserve(&app).is_none(), "behind with app_a");
        assert!(handoff.reserve(&other).is_some(), "not with app_b");

        // Its line taken, the app is leased to again; once stopped, nobody is.
        drop(handoff.waiting.take(10, |_| 10));
        assert!(handoff.reserve(&app).is_some());
        stop.cancel();
        assert!(handoff.reserve(&other).is_none());
    }
}
