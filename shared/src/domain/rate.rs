//! The per-webhook rate limit (SPEC §9.3) as a pure rule: the generic cell rate algorithm
//! without burst tolerance. One number per webhook, its theoretical arrival time (TAT), says
//! when the next attempt may start if attempts go out evenly at the limit: starts are at least
//! 1/N s apart, so no window of one second ever holds more than N, however many senders share
//! the TAT. (Any tolerance for bursts would let a window that begins with a burst hold more:
//! N at once, then one per 1/N s.)

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

    /// Rounded up: N intervals must span a whole second, or a window could fit N + 1 starts.
    fn interval(self) -> chrono::Duration {
        chrono::Duration::nanoseconds(1_000_000_000_u64.div_ceil(u64::from(self.per_second)) as i64)
    }

    /// Decides an attempt at `now` given the stored TAT (`None`: no attempt yet).
    pub fn admit(self, tat: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Admission {
        let due = tat.map_or(now, |tat| tat.max(now));
        if due <= now { Admission::Go { tat: now + self.interval() } } else { Admission::Wait { until: due } }
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
    fn after_a_quiet_spell_one_goes_at_once_and_the_rest_wait_their_turn() {
        let limit = Gcra::of(5);

        let starts = run(limit, [0, 150, 200, 399, 400].into_iter(), 100);

        assert_eq!(starts, vec![t(0), t(200), t(400)]);
    }

    #[test]
    fn no_window_of_one_second_holds_more_than_the_limit_under_constant_pressure() {
        for per_second in [1, 3, 10, 100] {
            let limit = Gcra::of(per_second);

            let starts = run(limit, 0..5_000, 3);

            assert!(most_in_any_second(&starts) <= per_second as usize, "{per_second}/s");
            let expected = per_second as usize * 5;
            // Sampled every millisecond, each start waits for the next instant: a little under.
            assert!(starts.len() * 10 >= expected * 9 && starts.len() <= expected, "{}", starts.len());
        }
    }

    #[test]
    fn a_held_attempt_learns_when_it_may_go() {
        let limit = Gcra::of(2);
        let Admission::Go { tat } = limit.admit(None, t(0)) else { panic!() };

        let held = limit.admit(Some(tat), t(100));

        assert_eq!(held, Admission::Wait { until: t(500) });
        assert!(matches!(limit.admit(Some(tat), t(500)), Admission::Go { .. }));
    }
}
