//! The clock, injected.
//!
//! Everything that decides by time (retry schedules, leases, expiry, dedupe windows, token
//! grace periods) asks a [`Clock`] rather than the system, so a test sets the time instead
//! of sleeping: [`ManualClock`] stands still until told to move. Production code uses
//! [`SystemClock`].
//!
//! Times are kept to the millisecond, the precision every store keeps, so a time a caller
//! is given equals what it later reads back.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SubsecRound as _, Utc};

/// Where the time comes from.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time, to the millisecond.
    fn now(&self) -> DateTime<Utc>;

    /// The current time in Unix seconds.
    fn unix(&self) -> i64 {
        self.now().timestamp()
    }
}

/// A clock to share between the parts of a server.
pub type SharedClock = Arc<dyn Clock>;

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(3)
    }
}

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that reads what it was last set to: for tests.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock reading `start` (to the millisecond).
    pub fn new(start: DateTime<Utc>) -> Arc<Self> {
        Arc::new(ManualClock {
            now: Mutex::new(start.trunc_subsecs(3)),
        })
    }

    /// A clock reading the system's time now, then standing still.
    pub fn starting_now() -> Arc<Self> {
        Self::new(SystemClock.now())
    }

    /// Moves the clock to `time`.
    pub fn set(&self, time: DateTime<Utc>) {
        *self.lock() = time.trunc_subsecs(3);
    }

    /// Moves the clock on by `by`.
    pub fn advance(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        let mut now = self.lock();
        *now = (*now + by).trunc_subsecs(3);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        // A panic while holding the lock cannot leave a half-written time behind.
        self.now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_keeps_milliseconds() {
        let now = SystemClock.now();
        assert_eq!(now.timestamp_subsec_nanos() % 1_000_000, 0);
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let start = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678901Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = ManualClock::new(start);
        assert_eq!(clock.now().to_rfc3339(), "2026-01-02T03:04:05.678+00:00");
        assert_eq!(clock.now(), clock.now());
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now().to_rfc3339(), "2026-01-02T03:05:35.678+00:00");
        assert_eq!(clock.unix(), start.timestamp() + 90);
        clock.set(start);
        assert_eq!(clock.now().timestamp(), start.timestamp());
    }
}
