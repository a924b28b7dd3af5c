//! Where retries are decided: given how an attempt ended, what happens to the delivery.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

use crate::model::{ErrorKind, MessageStatus, TriggerType};

/// The default schedule of waits after the first attempt: 5 s, 5 min, 30 min, 2 h, 5 h,
/// 10 h, 10 h.
pub const DEFAULT_SCHEDULE: [u64; 7] = [5, 300, 1800, 7200, 18000, 36000, 36000];

/// The least wait after an answer that asks the sender to slow down (429, 502, 503, 504)
/// or after a timeout.
pub const THROTTLE_MIN: Duration = Duration::from_secs(60);

/// How an attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// An HTTP answer with this status, and its `Retry-After` if it gave one.
    Answered {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// No answer.
    Failed(ErrorKind),
}

impl Ending {
    /// Any 2xx is a success; nothing else is (redirects included).
    pub fn is_success(&self) -> bool {
        matches!(self, Ending::Answered { status, .. } if (200..300).contains(status))
    }
}

/// What to do with a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The delivery's new status.
    pub status: MessageStatus,
    /// When to try again, if at all.
    pub next_attempt: Option<DateTime<Utc>>,
    /// The endpoint answered `410 Gone`: stop sending to it.
    pub disable_endpoint: bool,
    /// The schedule ran out with no success (the message is a dead letter for this
    /// endpoint until recovered or resent).
    pub exhausted: bool,
}

/// The retry schedule with its jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    schedule: Vec<Duration>,
    jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new(
            DEFAULT_SCHEDULE
                .iter()
                .map(|&s| Duration::from_secs(s))
                .collect(),
        )
    }
}

impl RetryPolicy {
    /// A policy with these waits after the first attempt and ±20 % jitter.
    pub fn new(schedule: Vec<Duration>) -> Self {
        Self {
            schedule,
            jitter: 0.2,
        }
    }

    /// The same schedule without jitter, for tests that check exact times.
    pub fn without_jitter(mut self) -> Self {
        self.jitter = 0.0;
        self
    }

    /// The waits after the first attempt.
    pub fn schedule(&self) -> &[Duration] {
        &self.schedule
    }

    /// Decides after the `attempt`-th scheduled attempt (1 for the first) of a delivery.
    pub fn decide(
        &self,
        attempt: u32,
        trigger: TriggerType,
        ending: Ending,
        now: DateTime<Utc>,
    ) -> Decision {
        let mut decision = Decision {
            status: MessageStatus::Fail,
            next_attempt: None,
            disable_endpoint: false,
            exhausted: false,
        };
        if ending.is_success() {
            decision.status = MessageStatus::Success;
            return decision;
        }
        if let Ending::Answered { status: 410, .. } = ending {
            decision.disable_endpoint = true;
            return decision;
        }
        if trigger == TriggerType::Manual {
            return decision;
        }
        let Some(&step) = self.schedule.get(attempt.saturating_sub(1) as usize) else {
            decision.exhausted = true;
            return decision;
        };
        let wait = self.wait(step, ending);
        decision.status = MessageStatus::Pending;
        decision.next_attempt = Some(now + chrono::Duration::from_std(wait).unwrap_or_default());
        decision
    }

    fn wait(&self, step: Duration, ending: Ending) -> Duration {
        let (throttled, retry_after) = match ending {
            Ending::Answered {
                status,
                retry_after,
            } => (matches!(status, 429 | 502 | 503 | 504), retry_after),
            Ending::Failed(kind) => (kind == ErrorKind::Timeout, None),
        };
        let step = if throttled {
            step.max(THROTTLE_MIN)
        } else {
            step
        };
        if let Some(asked) = retry_after {
            // Honoured, within [step, 2 x step]: a receiver can slow us down, not stall us.
            return asked.clamp(step, step * 2);
        }
        let jittered = if self.jitter == 0.0 {
            step
        } else {
            step.mul_f64(1.0 + rand::thread_rng().gen_range(-self.jitter..=self.jitter))
        };
        // Jitter spreads retries out; it never takes a throttled wait below the minimum.
        if throttled {
            jittered.max(THROTTLE_MIN)
        } else {
            jittered
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn after(decision: Decision, now: DateTime<Utc>) -> Option<i64> {
        decision.next_attempt.map(|at| (at - now).num_seconds())
    }

    #[test]
    fn follows_the_schedule_then_exhausts() {
        let policy = RetryPolicy::new(vec![secs(5), secs(300)]).without_jitter();
        let now = Utc::now();
        let fail = Ending::Answered {
            status: 500,
            retry_after: None,
        };
        let first = policy.decide(1, TriggerType::Scheduled, fail, now);
        assert_eq!(first.status, MessageStatus::Pending);
        assert_eq!(after(first, now), Some(5));
        assert_eq!(
            after(policy.decide(2, TriggerType::Scheduled, fail, now), now),
            Some(300)
        );
        let last = policy.decide(3, TriggerType::Scheduled, fail, now);
        assert_eq!(last.status, MessageStatus::Fail);
        assert!(last.exhausted);
        assert_eq!(last.next_attempt, None);
    }

    #[test]
    fn throttling_answers_back_off_and_retry_after_is_bounded() {
        let policy = RetryPolicy::new(vec![secs(5), secs(100)]).without_jitter();
        let now = Utc::now();
        let busy = |retry_after| Ending::Answered {
            status: 503,
            retry_after,
        };
        assert_eq!(
            after(
                policy.decide(1, TriggerType::Scheduled, busy(None), now),
                now
            ),
            Some(60)
        );
        assert_eq!(
            after(
                policy.decide(
                    1,
                    TriggerType::Scheduled,
                    Ending::Failed(ErrorKind::Timeout),
                    now
                ),
                now
            ),
            Some(60)
        );
        let huge = busy(Some(secs(100_000)));
        assert_eq!(
            after(policy.decide(2, TriggerType::Scheduled, huge, now), now),
            Some(200)
        );
        let tiny = busy(Some(secs(1)));
        assert_eq!(
            after(policy.decide(2, TriggerType::Scheduled, tiny, now), now),
            Some(100)
        );
    }

    #[test]
    fn gone_disables_manual_tries_once_redirects_fail() {
        let policy = RetryPolicy::default();
        let now = Utc::now();
        let gone = policy.decide(
            1,
            TriggerType::Scheduled,
            Ending::Answered {
                status: 410,
                retry_after: None,
            },
            now,
        );
        assert!(gone.disable_endpoint);
        assert_eq!(gone.next_attempt, None);
        let manual = policy.decide(
            1,
            TriggerType::Manual,
            Ending::Answered {
                status: 500,
                retry_after: None,
            },
            now,
        );
        assert_eq!(
            (manual.status, manual.next_attempt),
            (MessageStatus::Fail, None)
        );
        let redirect = Ending::Answered {
            status: 302,
            retry_after: None,
        };
        assert!(!redirect.is_success());
    }

    #[test]
    fn jitter_never_takes_a_throttled_wait_below_sixty_seconds() {
        let policy = RetryPolicy::new(vec![secs(5)]);
        let now = Utc::now();
        let busy = Ending::Answered {
            status: 429,
            retry_after: None,
        };
        for _ in 0..200 {
            let wait = after(policy.decide(1, TriggerType::Scheduled, busy, now), now).unwrap();
            assert!((60..=72).contains(&wait), "{wait}");
        }
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let policy = RetryPolicy::new(vec![secs(1000)]);
        let now = Utc::now();
        for _ in 0..200 {
            let wait = after(
                policy.decide(
                    1,
                    TriggerType::Scheduled,
                    Ending::Failed(ErrorKind::Connection),
                    now,
                ),
                now,
            )
            .unwrap();
            assert!((800..=1200).contains(&wait), "{wait}");
        }
    }
}
