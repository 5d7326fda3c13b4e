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

/// A slot taken under the limit: the attempt starts at `start`, and `tat` is stored as the
/// new theoretical arrival time, for whoever asks next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub start: DateTime<Utc>,
    pub tat: DateTime<Utc>,
}

impl Gcra {
    /// A limit of 0 is taken as 1: a webhook's limit is parsed at the edge and is never 0.
    pub fn of(per_second: u32) -> Self {
        Self { per_second: per_second.max(1) }
    }

    /// Rounded up: N intervals must span a whole second, or a window could fit N + 1 starts.
    pub fn interval(self) -> chrono::Duration {
        chrono::Duration::nanoseconds(1_000_000_000_u64.div_ceil(u64::from(self.per_second)) as i64)
    }

    /// Reserves the next free slot at `now` given the stored TAT (`None`: no attempt yet).
    /// Every caller gets a slot of its own, in the order they ask: waiters never race for
    /// the same instant, so a backlog is a queue, not a crowd polling the store.
    pub fn reserve(self, tat: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Reservation {
        let start = tat.map_or(now, |tat| tat.max(now));
        Reservation { start, tat: start + self.interval() }
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

    /// Reserves `per_instant` slots at each instant of `instants` (ms), returning the start
    /// times.
    fn run(limit: Gcra, instants: impl Iterator<Item = i64>, per_instant: usize) -> Vec<DateTime<Utc>> {
        let mut tat = None;
        let mut starts = Vec::new();
        for ms in instants {
            for _ in 0..per_instant {
                let reserved = limit.reserve(tat, t(ms));
                tat = Some(reserved.tat);
                starts.push(reserved.start);
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
    fn after_a_quiet_spell_one_goes_at_once_and_the_rest_each_get_the_next_slot() {
        let limit = Gcra::of(5);

        let starts = run(limit, [0].into_iter(), 4);
        let later = limit.reserve(Some(t(800)), t(2_000));

        assert_eq!(starts, vec![t(0), t(200), t(400), t(600)]);
        assert_eq!(later.start, t(2_000), "a slot in the past is not owed to anyone");
    }

    #[test]
    fn no_window_of_one_second_holds_more_than_the_limit_under_constant_pressure() {
        for per_second in [1, 3, 10, 100] {
            let limit = Gcra::of(per_second);

            let mut starts = run(limit, 0..5_000, 3);
            starts.retain(|start| *start < t(5_000));

            assert!(most_in_any_second(&starts) <= per_second as usize, "{per_second}/s");
            assert_eq!(starts.len(), per_second as usize * 5, "every slot of 5 s is used");
        }
    }

    #[test]
    fn a_backlog_is_spread_over_distinct_slots_in_arrival_order() {
        let limit = Gcra::of(2);

        let starts = run(limit, [100].into_iter(), 5);

        assert_eq!(starts, vec![t(100), t(600), t(1_100), t(1_600), t(2_100)]);
    }
}
