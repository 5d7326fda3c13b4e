//! When to try again (SPEC §6.3): the configured schedule with ±20 % jitter, and a receiver's
//! `Retry-After` honoured within [step, 2 × step] so it can slow us down but not stall us.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    schedule: Vec<Duration>,
}

impl RetryPolicy {
    pub fn new(schedule: Vec<Duration>) -> Self {
        Self { schedule }
    }

    /// Attempts in all: the first plus one per step.
    pub fn max_attempts(&self) -> u32 {
        self.schedule.len() as u32 + 1
    }

    /// The wait after attempt number `attempt` (1-based) failed, or `None` when it was the last.
    pub fn delay_after(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let step = *self.schedule.get(attempt.checked_sub(1)? as usize)?;
        let jittered = step.mul_f64(rand::rng().random_range(0.8..=1.2));
        Some(match retry_after {
            Some(asked) => asked.clamp(step, step * 2),
            None => jittered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(vec![Duration::from_secs(5), Duration::from_secs(300)])
    }

    #[test]
    fn delays_follow_the_schedule_within_twenty_percent() {
        for _ in 0..200 {
            let first = policy().delay_after(1, None).unwrap();
            let second = policy().delay_after(2, None).unwrap();
            assert!((4.0..=6.0).contains(&first.as_secs_f64()), "{first:?}");
            assert!((240.0..=360.0).contains(&second.as_secs_f64()), "{second:?}");
        }
        assert_eq!(policy().delay_after(3, None), None);
        assert_eq!(policy().max_attempts(), 3);
    }

    #[test]
    fn retry_after_is_honoured_between_one_and_two_steps() {
        let policy = policy();

        assert_eq!(policy.delay_after(1, Some(Duration::from_secs(7))), Some(Duration::from_secs(7)));
        assert_eq!(policy.delay_after(1, Some(Duration::from_secs(1))), Some(Duration::from_secs(5)));
        assert_eq!(policy.delay_after(1, Some(Duration::from_secs(3600))), Some(Duration::from_secs(10)));
    }
}
