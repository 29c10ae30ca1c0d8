//! [`RetryPolicy`]: exponential backoff with jitter for transient mail failures.

use std::time::Duration;

/// How transient failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The delay before the first retry (before jitter).
    pub base_delay: Duration,
    /// The longest delay between two attempts.
    pub max_delay: Duration,
    /// How many attempts in all (the first included) before giving up; at least 1.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 1 s, doubling to at most 5 min, 8 attempts (the binary's defaults too). Attempts count
    /// 4xx replies only; waits for an unreachable relay are not limited.
    fn default() -> Self {
        Self {
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            max_attempts: 8,
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (1-based), without jitter:
    /// `min(max_delay, base_delay * 2^(attempt-1))`.
    #[must_use]
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2_u32.saturating_pow(attempt.saturating_sub(1));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// The delay with "equal jitter": uniformly random in `[backoff/2, backoff]`, so retries of
    /// many mails after one outage spread out but never come sooner than half the backoff.
    #[must_use]
    pub fn delay(&self, attempt: u32) -> Duration {
        let full = self.backoff(attempt);
        let half = full / 2;
        let spread = u64::try_from((full - half).as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::random_range(0..=spread))
    }

    /// True when another attempt may follow failed attempt `attempt` (1-based).
    #[must_use]
    pub fn may_retry(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let policy = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            max_attempts: 5,
        };
        let delays: Vec<_> = (1..=6).map(|a| policy.backoff(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.backoff(200), Duration::from_millis(1000));
        assert!(policy.may_retry(4));
        assert!(!policy.may_retry(5));
    }

    #[test]
    fn jitter_stays_between_half_and_full_backoff() {
        let policy = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_attempts: 5,
        };
        let samples: Vec<_> = (0..200).map(|_| policy.delay(3)).collect();
        assert!(
            samples
                .iter()
                .all(|d| *d >= Duration::from_millis(200) && *d <= Duration::from_millis(400))
        );
        let first = samples[0];
        assert!(samples.iter().any(|d| *d != first), "jitter varies");
    }
}
