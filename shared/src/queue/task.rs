use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::{EventEnvelope, WebhookId};

/// Internal messages on the events queue, tagged by `kind` and versioned by `v`, so a
/// message already in flight keeps parsing after an upgrade adds kinds or versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QueueTask {
    /// Deliver one event to one webhook: pings, retry hops and redeliveries.
    Deliver(DeliverTask),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliverTask {
    pub v: V1,
    pub webhook_id: WebhookId,
    pub reason: DeliverReason,
    /// For retries: the attempt number this task performs. A task whose attempt has already
    /// happened is a duplicate and is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// For redeliveries: the entry's `try_count` when the operator asked. The request is one
    /// more attempt after that many; once the count is past it, the request is done, so a
    /// duplicated message, or `recover` run twice, sends once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_try_count: Option<u32>,
    pub envelope: EventEnvelope,
}

impl DeliverTask {
    pub fn new(webhook_id: WebhookId, reason: DeliverReason, envelope: EventEnvelope) -> Self {
        Self { v: V1, webhook_id, reason, attempt: None, after_try_count: None, envelope }
    }

    pub fn retry(webhook_id: WebhookId, attempt: u32, envelope: EventEnvelope) -> Self {
        Self {
            v: V1,
            webhook_id,
            reason: DeliverReason::Retry,
            attempt: Some(attempt),
            after_try_count: None,
            envelope,
        }
    }

    /// An operator's request to send a finished delivery again, made when its entry had
    /// `try_count` attempts.
    pub fn redeliver(webhook_id: WebhookId, after_try_count: u32, envelope: EventEnvelope) -> Self {
        Self {
            v: V1,
            webhook_id,
            reason: DeliverReason::Redeliver,
            attempt: None,
            after_try_count: Some(after_try_count),
            envelope,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliverReason {
    Ping,
    /// Part of an event's fan-out, handed to the queue because it had many subscribers.
    Fanout,
    /// A scheduled retry; the log entry says which attempt is next.
    Retry,
    /// An operator asked to send a failed delivery again.
    Redeliver,
}

/// Version 1 of a task's fields: serialises as `1` and refuses any other number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct V1;

impl Serialize for V1 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(1)
    }
}

impl<'de> Deserialize<'de> for V1 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match u32::deserialize(deserializer)? {
            1 => Ok(V1),
            other => Err(serde::de::Error::custom(format!("unsupported task version {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventType;

    #[test]
    fn a_task_serialises_with_kind_and_version_and_parses_back() {
        let envelope = EventEnvelope {
            event_id: uuid::Uuid::nil(),
            event_type: EventType::Ping,
            event: serde_json::json!({"ping_id": uuid::Uuid::nil()}),
            instance_id: uuid::Uuid::nil(),
            instance_name: "i".into(),
            created_at: chrono::DateTime::UNIX_EPOCH,
        };
        let task = QueueTask::Deliver(DeliverTask::new(WebhookId::new(), DeliverReason::Ping, envelope));

        let json = serde_json::to_value(&task).unwrap();

        assert_eq!(json["kind"], "deliver");
        assert_eq!(json["v"], 1);
        assert_eq!(json["reason"], "ping");
        assert_eq!(serde_json::from_value::<QueueTask>(json.clone()).unwrap(), task);
        let mut future = json;
        future["v"] = 2.into();
        assert!(serde_json::from_value::<QueueTask>(future).is_err());
    }
}
