//! Turns a queue or HTTP body into either a validated event or an internal delivery task.
//! Accepted shapes: a OneFuzz `EventMessage`, the same wrapped by SNS, an EventBridge event,
//! and the service's own tagged tasks (`{"kind": ...}`).

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::EventType;
use crate::domain::{EventEnvelope, ParseError, Trigger};
use crate::queue::QueueTask;

/// Largest accepted event payload, serialised. It keeps a log entry (payload, attempts and
/// keys) under DynamoDB's 400 KB item limit and a task message under SQS's 256 KiB limit.
pub const MAX_EVENT_BYTES: usize = 192 * 1024;

/// Namespace for ids derived from queue message ids: the same message always yields the
/// same event id, so a redelivered message is recognised.
const MESSAGE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1e_2d4c_8b9a_4e1f_a3c5_7d90_b2e4_f618);

#[derive(Debug, Clone)]
pub struct IngestDefaults {
    pub instance_id: Uuid,
    pub instance_name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Event(EventEnvelope),
    Task(QueueTask),
}

#[derive(Deserialize)]
struct EventMessageIn {
    event_type: String,
    event: Value,
    #[serde(default)]
    event_id: Option<Uuid>,
    #[serde(default)]
    instance_id: Option<Uuid>,
    #[serde(default)]
    instance_name: Option<String>,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
}

/// Parses a queue message body. `message_id` is the queue's id for the message, used to derive
/// a stable event id when the producer sent none.
pub fn parse_queue_body(
    body: &str,
    message_id: &str,
    defaults: &IngestDefaults,
    now: DateTime<Utc>,
) -> Result<Incoming, ParseError> {
    let value: Value = serde_json::from_str(body).map_err(|e| ParseError::new(format!("body is not JSON: {e}")))?;
    let fallback_id = Uuid::new_v5(&MESSAGE_ID_NAMESPACE, message_id.as_bytes());
    parse_value(value, fallback_id, defaults, now, 0)
}

fn parse_value(
    value: Value,
    fallback_id: Uuid,
    defaults: &IngestDefaults,
    now: DateTime<Utc>,
    depth: u8,
) -> Result<Incoming, ParseError> {
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
        return Ok(Incoming::Task(task));
    }
    if object.get("Type").and_then(Value::as_str) == Some("Notification") && depth == 0 {
        let inner = object
            .get("Message")
            .and_then(Value::as_str)
            .ok_or_else(|| ParseError::new("SNS notification without a Message string"))?;
        let inner: Value =
            serde_json::from_str(inner).map_err(|e| ParseError::new(format!("SNS Message is not JSON: {e}")))?;
        let id = match object.get("MessageId").and_then(Value::as_str) {
            Some(id) => Uuid::new_v5(&MESSAGE_ID_NAMESPACE, id.as_bytes()),
            None => fallback_id,
        };
        return parse_value(inner, id, defaults, now, depth + 1);
    }
    if let (Some(detail_type), Some(detail)) = (object.get("detail-type"), object.get("detail")) {
        let detail_type = detail_type.as_str().ok_or_else(|| ParseError::new("detail-type: must be a string"))?;
        let id = match object.get("id").and_then(Value::as_str) {
            Some(id) => Uuid::parse_str(id).unwrap_or_else(|_| Uuid::new_v5(&MESSAGE_ID_NAMESPACE, id.as_bytes())),
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
        return Ok(Incoming::Event(envelope));
    }
    parse_event_message(value, fallback_id, defaults, now).map(Incoming::Event)
}

/// Parses and validates a OneFuzz-shaped event message (SPEC §4 shape 1), filling defaults.
pub fn parse_event_message(
    value: Value,
    fallback_id: Uuid,
    defaults: &IngestDefaults,
    now: DateTime<Utc>,
) -> Result<EventEnvelope, ParseError> {
    let message: EventMessageIn = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            ParseError::new(e.inner().to_string())
        } else {
            ParseError::new(format!("{path}: {}", e.inner()))
        }
    })?;
    let event_type = EventType::parse(&message.event_type)?;
    let size = serde_json::to_vec(&message.event).map(|bytes| bytes.len()).unwrap_or(usize::MAX);
    if size > MAX_EVENT_BYTES {
        return Err(ParseError::new(format!("event: {size} bytes is over the {MAX_EVENT_BYTES}-byte limit")));
    }
    event_type.validate(&message.event)?;
    Ok(EventEnvelope {
        event_id: message.event_id.unwrap_or(fallback_id),
        event_type,
        event: message.event,
        instance_id: message.instance_id.unwrap_or(defaults.instance_id),
        instance_name: message.instance_name.unwrap_or_else(|| defaults.instance_name.clone()),
        created_at: message.created_at.unwrap_or(now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaults() -> IngestDefaults {
        IngestDefaults { instance_id: Uuid::nil(), instance_name: "test".into() }
    }

    fn ping() -> Value {
        json!({"ping_id": "00000000-0000-0000-0000-000000000001"})
    }

    fn event(incoming: Incoming) -> EventEnvelope {
        match incoming {
            Incoming::Event(envelope) => envelope,
            Incoming::Task(task) => panic!("expected an event, got {task:?}"),
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
        assert_eq!(from_bridge.event, ping());
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
