//! The delivery log entry and its state machine: every rule for when an entry allows another
//! attempt, who holds its claim, and what an attempt's outcome does under the retry policy, as
//! pure transitions on data. The sender reads an entry, asks it, writes what it answers and
//! sends; nothing here does I/O.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{RetryPolicy, WebhookId};
use crate::events::EventType;

/// One event as the sender delivers it, after ingestion filled in every default. Kept with
/// each log entry so a failed delivery can be redelivered without the producer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub event_id: Uuid,
    pub event_type: EventType,
    /// Shared, not copied, by the log entries and tasks of one event's fan-out.
    pub event: Arc<Value>,
    pub instance_id: Uuid,
    pub instance_name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Queued,
    Retrying,
    Succeeded,
    Failed,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 4] = [Self::Queued, Self::Retrying, Self::Succeeded, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Result<Self, super::ParseError> {
        Self::ALL.into_iter().find(|s| s.as_str() == value).ok_or_else(|| {
            super::ParseError::new(format!("state: must be one of queued, retrying, succeeded, failed, not {value:?}"))
        })
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// What one HTTP attempt did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_head: Option<String>,
}

/// The record of one event's delivery to one webhook; at most one per (webhook, event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryLog {
    pub webhook_id: WebhookId,
    pub event_id: Uuid,
    pub event_type: EventType,
    pub state: DeliveryState,
    pub try_count: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    pub envelope: EventEnvelope,
    /// While set and in the future, one sender owns the next attempt; others stand back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<DateTime<Utc>>,
    /// Whether the retry task for `next_attempt_at` is known to be on the queue. False after
    /// a failed send, so whoever handles this entry next sends it again.
    #[serde(default)]
    pub retry_scheduled: bool,
    /// Unix seconds after which the store may forget the entry (DynamoDB TTL).
    pub expires_at: i64,
    #[serde(default)]
    pub version: u64,
}

/// What asks for an attempt; a queue task carries it, with its data, so messages in flight
/// keep their meaning across upgrades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Trigger {
    /// An event's fan-out reached this webhook.
    Fanout,
    /// An operator's ping.
    Ping,
    /// A scheduled retry that performs attempt number `attempt`.
    Retry { attempt: u32 },
    /// An operator's request to send a finished delivery again: one more attempt after the
    /// `after` made when they asked (`None` for requests queued before that was recorded).
    Redeliver {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u32>,
    },
}

/// What an entry answers when a trigger asks for an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Claim the entry, then make the next attempt.
    Attempt,
    /// Nothing to do: the attempt was made, or belongs to another series.
    Skip(&'static str),
    /// Another sender holds a live claim until then: the message must come back after it, or a
    /// claim left by a sender that died would strand the delivery.
    Held { until: DateTime<Utc> },
    /// A retry arrived before its time (waits past the queue's delay cap hop): queue it again.
    NotYet { attempt: u32, at: DateTime<Utc> },
    /// The entry waits for a retry whose task was never queued (a failed send): queue it.
    QueueLostRetry { attempt: u32, at: DateTime<Utc> },
}

/// What recording an attempt made of the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Delivered,
    /// Attempt number `attempt` is due at `at`, `delay` from now.
    Retrying {
        attempt: u32,
        at: DateTime<Utc>,
        delay: Duration,
    },
    /// No attempt is left (or none is allowed): the delivery failed. `gone` when the endpoint
    /// answered 410, which also disables the webhook.
    Failed {
        gone: bool,
    },
}

/// How an attempt went, as the state machine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub attempt: Attempt,
    pub succeeded: bool,
    /// The receiver's `Retry-After`, already limited to the statuses that may ask (429, 503).
    pub retry_after: Option<Duration>,
}

/// A retry that arrives this early is close enough to its time to go now.
const EARLY_ENOUGH: chrono::Duration = chrono::Duration::seconds(1);
/// Attempts kept in a log entry; redeliveries can add attempts without end.
pub const MAX_LOGGED_ATTEMPTS: usize = 20;
/// How long past its next attempt an entry is kept, whatever the retention: long enough to
/// ride out a sender outage or a queue backlog.
const RETRY_KEEPS_ENTRY: chrono::Duration = chrono::Duration::hours(24);

impl DeliveryLog {
    /// A new entry for `envelope`: not attempted, unclaimed. Its `created_at` is the event's,
    /// so any sender handling the event (or a retry of it) can compute where it is stored.
    pub fn new(
        webhook_id: WebhookId,
        envelope: EventEnvelope,
        now: DateTime<Utc>,
        retention: chrono::Duration,
    ) -> Self {
        Self {
            webhook_id,
            event_id: envelope.event_id,
            event_type: envelope.event_type,
            state: DeliveryState::Queued,
            try_count: 0,
            created_at: envelope.created_at,
            updated_at: now,
            next_attempt_at: Some(now),
            attempts: Vec::new(),
            envelope,
            lease_until: None,
            retry_scheduled: false,
            expires_at: (now + retention).timestamp(),
            version: 0,
        }
    }

    /// Past retention: the stores treat it as gone even before they purge it.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at < now.timestamp()
    }

    /// Whether `trigger` may make the next attempt now.
    pub fn decide(&self, trigger: Trigger, now: DateTime<Utc>) -> Decision {
        let live_lease = self.lease_until.filter(|until| *until > now);
        if let Trigger::Redeliver { after: Some(after) } = trigger {
            // One more attempt after `after`: once there is one, this request (or another made
            // at the same point) is done, so a duplicated message sends once, in any order.
            if self.try_count > after {
                return Decision::Skip("this redelivery was already made");
            }
            // Only the entry the operator saw: finished, or claimed by this request and left
            // unsent. A younger entry for the same event or one in a retry series keeps its
            // own schedule.
            if self.try_count < after || !(self.state.is_final() || self.is_claimed_unsent()) {
                return Decision::Skip("not the delivery this redelivery was asked for");
            }
            return match live_lease {
                Some(until) => Decision::Held { until },
                None => Decision::Attempt,
            };
        }
        if self.state.is_final() {
            return match trigger {
                Trigger::Redeliver { after: None } => Decision::Attempt,
                _ => Decision::Skip("the delivery is already final"),
            };
        }
        if let Some(until) = live_lease {
            return Decision::Held { until };
        }
        let not_yet = self.next_attempt_at.filter(|at| *at > now + EARLY_ENOUGH);
        match trigger {
            Trigger::Redeliver { .. } => Decision::Attempt,
            Trigger::Retry { attempt } if attempt != self.try_count + 1 => self.lost_retry(),
            Trigger::Retry { attempt } => match not_yet {
                Some(at) => Decision::NotYet { attempt, at },
                None => Decision::Attempt,
            },
            // A redelivered fan-out message finds the entry in a retry series: the series'
            // own task makes its next attempt.
            Trigger::Fanout | Trigger::Ping if self.try_count > 0 && not_yet.is_some() => self.lost_retry(),
            Trigger::Fanout | Trigger::Ping => Decision::Attempt,
        }
    }

    /// Takes the entry for one attempt until `lease_until`.
    pub fn claim(&mut self, trigger: Trigger, lease_until: DateTime<Utc>, now: DateTime<Utc>) {
        if matches!(trigger, Trigger::Redeliver { .. }) {
            self.state = DeliveryState::Retrying;
            self.next_attempt_at = None;
            self.retry_scheduled = false;
        }
        self.lease_until = Some(lease_until);
        self.changed(now);
    }

    /// Records an attempt's outcome and the state it leads to under `policy`: a success is
    /// final; a failure is retried while the schedule lasts, except a redelivery (one attempt)
    /// and a `410 Gone` (the endpoint asked us to stop).
    pub fn record(&mut self, outcome: Outcome, trigger: Trigger, policy: &RetryPolicy, now: DateTime<Utc>) -> Recorded {
        let number = outcome.attempt.attempt;
        let gone = outcome.attempt.status_code == Some(410);
        self.attempts.push(outcome.attempt);
        if self.attempts.len() > MAX_LOGGED_ATTEMPTS {
            // Keep the item small: the first attempt and the latest.
            self.attempts.drain(1..self.attempts.len() - MAX_LOGGED_ATTEMPTS + 1);
        }
        self.try_count = number;
        self.lease_until = None;
        self.retry_scheduled = false;
        let may_retry = !gone && !matches!(trigger, Trigger::Redeliver { .. });
        let recorded = if outcome.succeeded {
            Recorded::Delivered
        } else if let Some(delay) = may_retry.then(|| policy.delay_after(number, outcome.retry_after)).flatten() {
            let at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
            Recorded::Retrying { attempt: number + 1, at, delay }
        } else {
            Recorded::Failed { gone }
        };
        match recorded {
            Recorded::Delivered => {
                self.state = DeliveryState::Succeeded;
                self.next_attempt_at = None;
            }
            Recorded::Retrying { at, .. } => {
                self.state = DeliveryState::Retrying;
                self.next_attempt_at = Some(at);
                // The retry continues from this entry: it must outlive the wait, however long
                // a Retry-After made it.
                self.expires_at = self.expires_at.max((at + RETRY_KEEPS_ENTRY).timestamp());
            }
            Recorded::Failed { .. } => {
                self.state = DeliveryState::Failed;
                self.next_attempt_at = None;
            }
        }
        self.changed(now);
        recorded
    }

    /// Notes that the task for the pending retry is on the queue. Set before the entry is
    /// written, so it is part of the same write.
    pub fn retry_queued(&mut self) {
        self.retry_scheduled = true;
    }

    /// Notes that a lost retry task was queued again.
    pub fn requeued(&mut self, now: DateTime<Utc>) {
        self.retry_scheduled = true;
        self.changed(now);
    }

    /// Ends a pending delivery to a disabled webhook as failed, so it does not sit in
    /// `retrying` for good; `recover` sends it once the webhook is enabled again. `false` when
    /// the entry is already final.
    pub fn fail_pending(&mut self, now: DateTime<Utc>) -> bool {
        if self.state.is_final() {
            return false;
        }
        self.state = DeliveryState::Failed;
        self.next_attempt_at = None;
        self.lease_until = None;
        self.changed(now);
        true
    }

    /// Claimed by a redelivery and not sent yet.
    fn is_claimed_unsent(&self) -> bool {
        self.state == DeliveryState::Retrying && self.next_attempt_at.is_none()
    }

    fn lost_retry(&self) -> Decision {
        match self.next_attempt_at {
            Some(at) if !self.retry_scheduled && self.state == DeliveryState::Retrying => {
                Decision::QueueLostRetry { attempt: self.try_count + 1, at }
            }
            _ => Decision::Skip("another task makes this attempt"),
        }
    }

    /// Every change goes through here: the stores write an entry only over the version it
    /// was read at, so the bump is what makes each transition a conditional write.
    fn changed(&mut self, now: DateTime<Utc>) {
        self.updated_at = now;
        self.version += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventType;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn entry() -> DeliveryLog {
        let envelope = EventEnvelope {
            event_id: uuid::Uuid::new_v4(),
            event_type: EventType::Ping,
            event: serde_json::json!({"ping_id": uuid::Uuid::nil()}).into(),
            instance_id: uuid::Uuid::nil(),
            instance_name: "i".into(),
            created_at: now(),
        };
        DeliveryLog::new(WebhookId::new(), envelope, now(), chrono::Duration::days(7))
    }

    fn policy() -> RetryPolicy {
        RetryPolicy::new(vec![Duration::from_secs(5), Duration::from_secs(300)])
    }

    fn outcome(number: u32, status: u16) -> Outcome {
        Outcome {
            attempt: Attempt {
                attempt: number,
                at: now(),
                status_code: Some(status),
                error: None,
                duration_ms: 1,
                response_head: None,
            },
            succeeded: (200..300).contains(&status),
            retry_after: None,
        }
    }

    fn after(seconds: i64) -> DateTime<Utc> {
        now() + chrono::Duration::seconds(seconds)
    }

    #[test]
    fn a_new_entry_takes_its_events_time_so_its_key_is_known_from_the_message() {
        let entry = entry();

        assert_eq!(entry.created_at, entry.envelope.created_at);
        assert_eq!((entry.state, entry.try_count, entry.version), (DeliveryState::Queued, 0, 0));
        assert_eq!(entry.decide(Trigger::Fanout, now()), Decision::Attempt);
    }

    #[test]
    fn every_transition_bumps_the_version_once() {
        let mut entry = entry();

        entry.claim(Trigger::Fanout, after(45), now());
        assert_eq!(entry.version, 1);
        entry.record(outcome(1, 500), Trigger::Fanout, &policy(), after(1));
        assert_eq!(entry.version, 2);
        entry.requeued(after(2));
        assert_eq!(entry.version, 3);
        entry.retry_queued();
        assert_eq!(entry.version, 3, "part of the write being prepared, not a write of its own");
        assert!(entry.fail_pending(after(3)));
        assert_eq!(entry.version, 4);
        assert!(!entry.fail_pending(after(4)), "a final entry does not change");
        assert_eq!(entry.version, 4);
    }

    #[test]
    fn a_success_is_final_and_nothing_but_a_redelivery_sends_it_again() {
        let mut entry = entry();

        let recorded = entry.record(outcome(1, 204), Trigger::Fanout, &policy(), now());

        assert_eq!(recorded, Recorded::Delivered);
        assert_eq!((entry.state, entry.try_count, entry.next_attempt_at), (DeliveryState::Succeeded, 1, None));
        for trigger in [Trigger::Fanout, Trigger::Ping, Trigger::Retry { attempt: 2 }] {
            assert!(matches!(entry.decide(trigger, after(10)), Decision::Skip(_)), "{trigger:?}");
        }
        assert_eq!(entry.decide(Trigger::Redeliver { after: Some(1) }, after(10)), Decision::Attempt);
        assert!(matches!(entry.decide(Trigger::Redeliver { after: Some(0) }, after(10)), Decision::Skip(_)));
    }

    #[test]
    fn a_failure_schedules_the_next_attempt_and_keeps_the_entry_past_it() {
        let mut entry = entry();

        let recorded = entry.record(outcome(1, 500), Trigger::Fanout, &policy(), now());

        let Recorded::Retrying { attempt, at, delay } = recorded else { panic!("{recorded:?}") };
        assert_eq!(attempt, 2);
        assert!((4.0..=6.0).contains(&delay.as_secs_f64()), "{delay:?}");
        assert_eq!(entry.next_attempt_at, Some(at));
        assert_eq!(entry.state, DeliveryState::Retrying);
        assert!(entry.expires_at >= (at + chrono::Duration::hours(24)).timestamp());
        assert_eq!(entry.decide(Trigger::Retry { attempt: 2 }, at), Decision::Attempt);
        assert!(matches!(entry.decide(Trigger::Retry { attempt: 3 }, at), Decision::QueueLostRetry { attempt: 2, .. }));
        entry.retry_queued();
        assert!(matches!(entry.decide(Trigger::Retry { attempt: 3 }, at), Decision::Skip(_)));
    }

    #[test]
    fn a_retry_that_arrives_early_hops_again_and_one_just_early_goes_now() {
        let mut entry = entry();
        let Recorded::Retrying { at, .. } = entry.record(outcome(1, 503), Trigger::Fanout, &policy(), now()) else {
            panic!("not retrying")
        };

        let early = entry.decide(Trigger::Retry { attempt: 2 }, at - chrono::Duration::seconds(30));
        let nearly = entry.decide(Trigger::Retry { attempt: 2 }, at - chrono::Duration::milliseconds(500));

        assert_eq!(early, Decision::NotYet { attempt: 2, at });
        assert_eq!(nearly, Decision::Attempt);
    }

    #[test]
    fn the_last_attempt_failing_fails_the_delivery_and_gone_stops_at_once() {
        let mut exhausted = entry();
        let mut gone = entry();

        let last = exhausted.record(outcome(3, 500), Trigger::Retry { attempt: 3 }, &policy(), now());
        let stopped = gone.record(outcome(1, 410), Trigger::Fanout, &policy(), now());

        assert_eq!(last, Recorded::Failed { gone: false });
        assert_eq!(stopped, Recorded::Failed { gone: true });
        assert_eq!((gone.state, gone.next_attempt_at), (DeliveryState::Failed, None));
    }

    #[test]
    fn a_live_claim_holds_every_trigger_back_until_it_lapses() {
        let mut entry = entry();
        entry.claim(Trigger::Fanout, after(45), now());

        for trigger in
            [Trigger::Fanout, Trigger::Ping, Trigger::Retry { attempt: 1 }, Trigger::Redeliver { after: None }]
        {
            assert_eq!(entry.decide(trigger, after(10)), Decision::Held { until: after(45) }, "{trigger:?}");
        }
        assert_eq!(entry.decide(Trigger::Fanout, after(46)), Decision::Attempt, "a dead sender's claim lapses");
    }

    #[test]
    fn a_redelivery_is_one_attempt_with_no_retry_series() {
        let mut entry = entry();
        entry.record(outcome(1, 500), Trigger::Fanout, &policy(), now());
        entry.record(outcome(2, 500), Trigger::Retry { attempt: 2 }, &policy(), after(10));
        entry.record(outcome(3, 500), Trigger::Retry { attempt: 3 }, &policy(), after(400));
        assert_eq!(entry.state, DeliveryState::Failed);
        let trigger = Trigger::Redeliver { after: Some(3) };

        entry.claim(trigger, after(500), after(460));
        let claimed_unsent = entry.decide(trigger, after(501));
        let recorded = entry.record(outcome(4, 500), trigger, &policy(), after(470));

        assert_eq!(claimed_unsent, Decision::Attempt, "a claim that lapsed unsent may be taken again");
        assert_eq!(recorded, Recorded::Failed { gone: false });
        assert!(matches!(entry.decide(trigger, after(480)), Decision::Skip(_)), "a duplicate request sends once");
    }

    #[test]
    fn a_redelivered_fan_out_leaves_a_retry_series_to_its_own_task() {
        let mut entry = entry();
        entry.record(outcome(1, 500), Trigger::Fanout, &policy(), now());
        entry.retry_queued();

        assert!(matches!(entry.decide(Trigger::Fanout, after(1)), Decision::Skip(_)));
        assert_eq!(entry.decide(Trigger::Fanout, after(60)), Decision::Attempt, "once due, the fan-out may make it");
    }

    #[test]
    fn only_the_first_and_the_latest_attempts_are_kept() {
        let mut entry = entry();
        for number in 1..=(MAX_LOGGED_ATTEMPTS as u32 + 5) {
            entry.record(outcome(number, 500), Trigger::Redeliver { after: None }, &policy(), now());
        }

        assert_eq!(entry.attempts.len(), MAX_LOGGED_ATTEMPTS);
        assert_eq!(entry.attempts[0].attempt, 1);
        assert_eq!(entry.attempts.last().map(|a| a.attempt), Some(MAX_LOGGED_ATTEMPTS as u32 + 5));
    }
}
