use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{EventEnvelope, Trigger, WebhookId};

/// Internal messages on the events queue, tagged by `kind` and versioned by `v`, so a
/// message already in flight keeps parsing after an upgrade adds kinds or versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QueueTask {
    /// Deliver one event to one webhook: pings, fan-outs handed to the queue, retry hops and
    /// redeliveries.
    Deliver(DeliverTask),
}

/// One event for one webhook, and what asks for it. Written as version 2
/// (`{"v": 2, "trigger": {"type": "retry", "attempt": 3}, ...}`); version 1 messages
/// (`"reason"` with `attempt` / `after_try_count` beside it) still parse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "WireTask", into = "WireTask")]
pub struct DeliverTask {
    pub webhook_id: WebhookId,
    pub trigger: Trigger,
    pub envelope: EventEnvelope,
    /// The start a rate-limited delivery reserved under its webhook's limit before it was
    /// handed to the queue to wait: it goes then, without taking another slot.
    pub rate_slot: Option<DateTime<Utc>>,
}

impl DeliverTask {
    pub fn new(webhook_id: WebhookId, trigger: Trigger, envelope: EventEnvelope) -> Self {
        Self { webhook_id, trigger, envelope, rate_slot: None }
    }

    /// The same delivery, waiting on the queue for the slot it reserved.
    pub fn waiting_for(webhook_id: WebhookId, trigger: Trigger, envelope: EventEnvelope, slot: DateTime<Utc>) -> Self {
        Self { rate_slot: Some(slot), ..Self::new(webhook_id, trigger, envelope) }
    }

    pub fn ping(webhook_id: WebhookId, envelope: EventEnvelope) -> Self {
        Self::new(webhook_id, Trigger::Ping, envelope)
    }

    pub fn fanout(webhook_id: WebhookId, envelope: EventEnvelope) -> Self {
        Self::new(webhook_id, Trigger::Fanout, envelope)
    }

    pub fn retry(webhook_id: WebhookId, attempt: u32, envelope: EventEnvelope) -> Self {
        Self::new(webhook_id, Trigger::Retry { attempt }, envelope)
    }

    /// An operator's request to send a finished delivery again, made when its entry had
    /// `try_count` attempts.
    pub fn redeliver(webhook_id: WebhookId, after_try_count: u32, envelope: EventEnvelope) -> Self {
        Self::new(webhook_id, Trigger::Redeliver { after: Some(after_try_count) }, envelope)
    }
}

/// Version 1's reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ReasonV1 {
    Ping,
    Fanout,
    Retry,
    Redeliver,
}

/// Every field either version has; `v` says which apply.
#[derive(Serialize, Deserialize)]
struct WireTask {
    v: u32,
    webhook_id: WebhookId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trigger: Option<Trigger>,
    #[serde(default, skip_serializing)]
    reason: Option<ReasonV1>,
    #[serde(default, skip_serializing)]
    attempt: Option<u32>,
    #[serde(default, skip_serializing)]
    after_try_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate_slot: Option<DateTime<Utc>>,
    envelope: EventEnvelope,
}

impl TryFrom<WireTask> for DeliverTask {
    type Error = String;

    fn try_from(wire: WireTask) -> Result<Self, String> {
        let trigger = match (wire.v, wire.trigger, wire.reason) {
            (2, Some(trigger), _) => trigger,
            (2, None, _) => return Err("a version 2 task needs a trigger".into()),
            (1, _, Some(reason)) => match reason {
                ReasonV1::Ping => Trigger::Ping,
                ReasonV1::Fanout => Trigger::Fanout,
                // A retry without its attempt number cannot be matched to the log: attempt 0
                // never is, so it is dropped as stale.
                ReasonV1::Retry => Trigger::Retry { attempt: wire.attempt.unwrap_or(0) },
                ReasonV1::Redeliver => Trigger::Redeliver { after: wire.after_try_count },
            },
            (1, _, None) => return Err("a version 1 task needs a reason".into()),
            (other, ..) => return Err(format!("unsupported task version {other}")),
        };
        Ok(Self { webhook_id: wire.webhook_id, trigger, envelope: wire.envelope, rate_slot: wire.rate_slot })
    }
}

impl From<DeliverTask> for WireTask {
    fn from(task: DeliverTask) -> Self {
        Self {
            v: 2,
            webhook_id: task.webhook_id,
            trigger: Some(task.trigger),
            reason: None,
            attempt: None,
            after_try_count: None,
            rate_slot: task.rate_slot,
            envelope: task.envelope,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::events::EventType;

    fn envelope() -> EventEnvelope {
        EventEnvelope {
            event_id: uuid::Uuid::nil(),
            event_type: EventType::Ping,
            event: json!({"ping_id": uuid::Uuid::nil()}).into(),
            instance_id: uuid::Uuid::nil(),
            instance_name: "i".into(),
            created_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_task_serialises_as_version_2_with_its_trigger_and_parses_back() {
        let task = QueueTask::Deliver(DeliverTask::retry(WebhookId::new(), 3, envelope()));

        let json = serde_json::to_value(&task).unwrap();

        assert_eq!(json["kind"], "deliver");
        assert_eq!(json["v"], 2);
        assert_eq!(json["trigger"], json!({"type": "retry", "attempt": 3}));
        assert!(json.get("reason").is_none());
        assert_eq!(serde_json::from_value::<QueueTask>(json.clone()).unwrap(), task);
        let mut future = json;
        future["v"] = 3.into();
        assert!(serde_json::from_value::<QueueTask>(future).is_err());
    }

    #[test]
    fn a_delivery_waiting_for_its_rate_slot_carries_the_slot_and_parses_back() {
        let slot = chrono::DateTime::UNIX_EPOCH + chrono::Duration::milliseconds(1_800_000_000_250);
        let task = QueueTask::Deliver(DeliverTask::waiting_for(WebhookId::new(), Trigger::Fanout, envelope(), slot));

        let json = serde_json::to_value(&task).unwrap();
        let plain =
            serde_json::to_value(QueueTask::Deliver(DeliverTask::fanout(WebhookId::new(), envelope()))).unwrap();

        assert_eq!(json["rate_slot"], "2027-01-15T08:00:00.250Z");
        assert!(plain.get("rate_slot").is_none(), "only a waiting delivery names a slot");
        assert_eq!(serde_json::from_value::<QueueTask>(json).unwrap(), task);
    }

    #[test]
    fn version_1_tasks_already_on_the_queue_keep_their_meaning() {
        let id = WebhookId::new();
        let v1 = |extra: serde_json::Value| {
            let mut body = json!({"kind": "deliver", "v": 1, "webhook_id": id, "envelope": envelope()});
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            match serde_json::from_value::<QueueTask>(body).unwrap() {
                QueueTask::Deliver(task) => task.trigger,
            }
        };

        assert_eq!(v1(json!({"reason": "ping"})), Trigger::Ping);
        assert_eq!(v1(json!({"reason": "fanout"})), Trigger::Fanout);
        assert_eq!(v1(json!({"reason": "retry", "attempt": 4})), Trigger::Retry { attempt: 4 });
        assert_eq!(v1(json!({"reason": "retry"})), Trigger::Retry { attempt: 0 });
        assert_eq!(v1(json!({"reason": "redeliver", "after_try_count": 2})), Trigger::Redeliver { after: Some(2) });
        assert_eq!(v1(json!({"reason": "redeliver"})), Trigger::Redeliver { after: None });
    }

    #[test]
    fn a_version_2_task_without_a_trigger_is_refused() {
        let body = json!({"kind": "deliver", "v": 2, "webhook_id": WebhookId::new(), "envelope": envelope()});

        let err = serde_json::from_value::<QueueTask>(body).unwrap_err();

        assert!(err.to_string().contains("needs a trigger"), "{err}");
    }
}
