//! The delivery queue port: where events and delivery tasks wait for the sender. SQS in AWS;
//! in local mode a queue kept in the embedded store, so pending work survives restarts.

mod dead_letter;
mod local;
mod sqs;
mod task;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

pub use dead_letter::{DeadLetters, FileDeadLetters, SqsDeadLetters};
pub use local::LocalQueue;
pub use sqs::SqsQueue;
pub use task::{DeliverTask, QueueTask};

use crate::domain::{EventEnvelope, ParseError, Trigger};
use crate::events::{EventType, IngestDefaults, id_from_message_id, parse_event_message};

/// SQS refuses delays above 15 minutes; longer waits hop through the queue.
pub const MAX_QUEUE_DELAY: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue send failed: {0}")]
    Send(String),
    /// The queue cannot take messages for now (local mode: the store cannot write).
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    #[error("queue message could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What goes on the queue: a producer-shaped event message (SPEC §4 shape 1), or a task.
#[derive(Debug, Clone, PartialEq)]
pub enum QueueMessage {
    Event(EventEnvelope),
    Task(QueueTask),
}

impl QueueMessage {
    pub fn to_body(&self) -> Result<String, serde_json::Error> {
        match self {
            Self::Event(envelope) => serde_json::to_string(envelope),
            Self::Task(task) => serde_json::to_string(task),
        }
    }

    /// The inverse of [`QueueMessage::to_body`], and more: a body may also be any shape a
    /// producer sends (SPEC §4). See [`parse_queue_body`].
    pub fn from_body(
        body: &str,
        message_id: &str,
        defaults: &IngestDefaults,
        now: DateTime<Utc>,
    ) -> Result<Self, ParseError> {
        parse_queue_body(body, message_id, defaults, now)
    }
}

// Parsing a queue body: a OneFuzz `EventMessage`, the same wrapped by SNS, an EventBridge
// event, or the service's own tagged tasks (`{"kind": ...}`).

/// Parses a queue message body. `message_id` is the queue's id for the message, used to derive
/// a stable event id when the producer sent none.
pub fn parse_queue_body(
    body: &str,
    message_id: &str,
    defaults: &IngestDefaults,
    now: DateTime<Utc>,
) -> Result<QueueMessage, ParseError> {
    let value: Value = serde_json::from_str(body).map_err(|e| ParseError::new(format!("body is not JSON: {e}")))?;
    let fallback_id = id_from_message_id(message_id);
    parse_value(value, fallback_id, defaults, now, 0)
}

fn parse_value(
    value: Value,
    fallback_id: Uuid,
    defaults: &IngestDefaults,
    now: DateTime<Utc>,
    depth: u8,
) -> Result<QueueMessage, ParseError> {
    let Value::Object(object) = &value else {
        return Err(ParseError::new("body must be a JSON object"));
    };
    if object.contains_key("kind") {
        let task: QueueTask = serde_path_to_error::deserialize(value)
            .map_err(|e| ParseError::new(format!("not a valid task: {}: {}", e.path(), e.inner())))?;
        // Producers can write to the same queue: a task's payload is held to the same rules
        // as an event's, and a ping carries only a ping.
        let QueueTask::Deliver(deliver) = &task;
        if deliver.trigger == Trigger::Ping && deliver.envelope.event_type != EventType::Ping {
            return Err(ParseError::new("a ping task must carry a ping event"));
        }
        deliver.envelope.event_type.validate(&deliver.envelope.event)?;
        return Ok(QueueMessage::Task(task));
    }
    if object.get("Type").and_then(Value::as_str) == Some("Notification") && depth == 0 {
        let inner = object
            .get("Message")
            .and_then(Value::as_str)
            .ok_or_else(|| ParseError::new("SNS notification without a Message string"))?;
        let inner: Value =
            serde_json::from_str(inner).map_err(|e| ParseError::new(format!("SNS Message is not JSON: {e}")))?;
        let id = match object.get("MessageId").and_then(Value::as_str) {
            Some(id) => id_from_message_id(id),
            None => fallback_id,
        };
        return parse_value(inner, id, defaults, now, depth + 1);
    }
    if let (Some(detail_type), Some(detail)) = (object.get("detail-type"), object.get("detail")) {
        let detail_type = detail_type.as_str().ok_or_else(|| ParseError::new("detail-type: must be a string"))?;
        let id = match object.get("id").and_then(Value::as_str) {
            Some(id) => Uuid::parse_str(id).unwrap_or_else(|_| id_from_message_id(id)),
            None => fallback_id,
        };
        let time = object
            .get("time")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let whole_message = detail.get("event_type").is_some() && detail.get("event").is_some();
        let message = if whole_message {
            detail.clone()
        } else {
            serde_json::json!({"event_type": detail_type, "event": detail})
        };
        let mut envelope = parse_event_message(message, id, defaults, now)?;
        if !whole_message || detail.get("created_at").is_none() {
            envelope.created_at = time.unwrap_or(envelope.created_at);
        }
        return Ok(QueueMessage::Event(envelope));
    }
    parse_event_message(value, fallback_id, defaults, now).map(QueueMessage::Event)
}

#[async_trait]
pub trait Queue: Send + Sync {
    /// Sends one message, visible after `delay` (SQS caps it at [`MAX_QUEUE_DELAY`]).
    async fn send(&self, message: &QueueMessage, delay: Duration) -> Result<(), QueueError>;

    /// Sends several messages; an error means some may not have been sent.
    async fn send_batch(&self, messages: &[QueueMessage], delay: Duration) -> Result<(), QueueError> {
        for message in messages {
            self.send(message, delay).await?;
        }
        Ok(())
    }
}

/// The queue of a function that has none configured: sending is an error, reported as a 500
/// with the cause in the log. Lets read-only functions start without `EVENTS_QUEUE_URL`.
pub struct UnconfiguredQueue;

#[async_trait]
impl Queue for UnconfiguredQueue {
    async fn send(&self, _message: &QueueMessage, _delay: Duration) -> Result<(), QueueError> {
        Err(QueueError::Send("EVENTS_QUEUE_URL is not configured for this function".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::MAX_EVENT_BYTES;
    use serde_json::json;

    fn defaults() -> IngestDefaults {
        IngestDefaults { instance_id: Uuid::nil(), instance_name: "test".into() }
    }

    fn ping() -> Value {
        json!({"ping_id": "00000000-0000-0000-0000-000000000001"})
    }

    fn event(incoming: QueueMessage) -> EventEnvelope {
        match incoming {
            QueueMessage::Event(envelope) => envelope,
            QueueMessage::Task(task) => panic!("expected an event, got {task:?}"),
        }
    }

    #[test]
    fn a_missing_event_id_is_derived_from_the_message_id_and_stable() {
        let body = json!({"event_type": "ping", "event": ping()}).to_string();

        let first = event(parse_queue_body(&body, "msg-1", &defaults(), Utc::now()).unwrap());
        let again = event(parse_queue_body(&body, "msg-1", &defaults(), Utc::now()).unwrap());
        let other = event(parse_queue_body(&body, "msg-2", &defaults(), Utc::now()).unwrap());

        assert_eq!(first.event_id, again.event_id);
        assert_ne!(first.event_id, other.event_id);
        assert_eq!(first.event_id.get_version_num(), 5);
        assert_eq!(first.instance_name, "test");
    }

    #[test]
    fn sns_and_eventbridge_wrappers_unwrap_to_the_same_event() {
        let plain = json!({"event_type": "ping", "event": ping(), "event_id": "00000000-0000-0000-0000-0000000000aa"});
        let sns = json!({"Type": "Notification", "MessageId": "m", "Message": plain.to_string()});
        let bridge = json!({"id": "00000000-0000-0000-0000-0000000000bb", "detail-type": "ping", "time": "2024-01-02T03:04:05Z", "detail": ping()});

        let from_sns = event(parse_queue_body(&sns.to_string(), "x", &defaults(), Utc::now()).unwrap());
        let from_bridge = event(parse_queue_body(&bridge.to_string(), "x", &defaults(), Utc::now()).unwrap());

        assert_eq!(from_sns.event_id.to_string(), "00000000-0000-0000-0000-0000000000aa");
        assert_eq!(from_bridge.event_id.to_string(), "00000000-0000-0000-0000-0000000000bb");
        assert_eq!(from_bridge.created_at.to_rfc3339(), "2024-01-02T03:04:05+00:00");
        assert_eq!(*from_bridge.event, ping());
    }

    #[test]
    fn invalid_events_are_refused_with_a_reason() {
        let cases = [
            (json!({"event_type": "tsk_created", "event": {}}), "unknown event type: tsk_created"),
            (json!({"event_type": "ping", "event": {}}), "ping_id"),
            (json!({"event": {}}), "event_type"),
            (json!({"event_type": "ping", "event": ping(), "event_id": "nope"}), "event_id"),
        ];
        for (body, expected) in cases {
            let err = parse_queue_body(&body.to_string(), "m", &defaults(), Utc::now()).unwrap_err();
            assert!(err.0.contains(expected), "{body}: {err}");
        }
        assert!(parse_queue_body("not json", "m", &defaults(), Utc::now()).is_err());
    }

    #[test]
    fn an_oversized_event_is_refused_before_it_is_stored() {
        let big = json!({"event_type": "ping", "event": {"ping_id": "00000000-0000-0000-0000-000000000001", "pad": "x".repeat(MAX_EVENT_BYTES)}});

        let err = parse_queue_body(&big.to_string(), "m", &defaults(), Utc::now()).unwrap_err();

        assert!(err.0.contains("limit"), "{err}");
    }
}
