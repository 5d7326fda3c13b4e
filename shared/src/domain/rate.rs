//! The per-webhook rate limit (SPEC §9.3) as a pure rule: the generic cell rate algorithm.
//! One number per webhook, its theoretical arrival time (TAT), says when the next attempt is
//! due if attempts went out evenly at the limit; an attempt may start while that time is no
//! more than the burst tolerance ahead of now. With a limit of N per second and a tolerance of
//! (N - 1)/N s, no window of one second ever holds more than N starts, however many senders
//! share the TAT, and a burst after a quiet spell is at most N.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The rule for a limit of `per_second` attempts per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    per_second: u32,
}

/// Whether an attempt may start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Start it; store `tat` as the new theoretical arrival time.
    Go { tat: DateTime<Utc> },
    /// Not before `until`.
    Wait { until: DateTime<Utc> },
}

impl Gcra {
    /// A limit of 0 is taken as 1: a webhook's limit is parsed at the edge and is never 0.
    pub fn of(per_second: u32) -> Self {
        Self { per_second: per_second.max(1) }
    }

    fn interval(self) -> chrono::Duration {
        chrono::Duration::nanoseconds(1_000_000_000 / i64::from(self.per_second))
    }

    fn tolerance(self) -> chrono::Duration {
        self.interval() * (self.per_second as i32 - 1)
    }

    /// Decides an attempt at `now` given the stored TAT (`None`: no attempt yet).
    pub fn admit(self, tat: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Admission {
        let tat = tat.map_or(now, |tat| tat.max(now));
        let earliest = tat - self.tolerance();
        if earliest <= now {
            Admission::Go { tat: tat + self.interval() }
        } else {
            Admission::Wait { until: earliest }
        }
    }
}

/// How long until `until`, never negative.
pub fn wait_for(until: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (until - now).to_std().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + chrono::Duration::milliseconds(1_800_000_000_000 + ms)
    }

    /// Admits as many attempts as it can at each instant of `instants` (ms), returning the
    /// start times.
    fn run(limit: Gcra, instants: impl Iterator<Item = i64>, per_instant: usize) -> Vec<DateTime<Utc>> {
        let mut tat = None;
        let mut starts = Vec::new();
        for ms in instants {
            for _ in 0..per_instant {
                if let Admission::Go { tat: next } = limit.admit(tat, t(ms)) {
                    tat = Some(next);
                    starts.push(t(ms));
                }
            }
        }
        starts
    }

    fn most_in_any_second(starts: &[DateTime<Utc>]) -> usize {
        starts
            .iter()
            .map(|start| starts.iter().filter(|s| **s >= *start && **s < *start + chrono::Duration::seconds(1)).count())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn a_burst_after_a_quiet_spell_is_at_most_the_limit() {
        let limit = Gcra::of(5);

        let starts = run(limit, std::iter::once(0), 100);

        assert_eq!(starts.len(), 5);
    }

    #[test]
    fn no_window_of_one_second_holds_more_than_the_limit_under_constant_pressure() {
        for per_second in [1, 3, 10, 100] {
            let limit = Gcra::of(per_second);

            let starts = run(limit, (0..5_000).step_by(7), 50);

            assert!(most_in_any_second(&starts) <= per_second as usize, "{per_second}/s");
            let expected = per_second as usize * 5;
            assert!(starts.len() >= expected - 1 && starts.len() <= expected + per_second as usize, "{}", starts.len());
        }
    }

    #[test]
    fn a_held_attempt_learns_when_it_may_go() {
        let limit = Gcra::of(2);
        let Admission::Go { tat } = limit.admit(None, t(0)) else { panic!() };
        let Admission::Go { tat } = limit.admit(Some(tat), t(0)) else { panic!() };

        let held = limit.admit(Some(tat), t(100));

        assert_eq!(held, Admission::Wait { until: t(500) });
        assert!(matches!(limit.admit(Some(tat), t(500)), Admission::Go { .. }));
    }
}
