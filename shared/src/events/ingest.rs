//! A producer's event message (SPEC §4 shape 1), validated against the catalog. The queue's
//! other shapes (SNS, EventBridge, the service's tasks) unwrap to this in `queue`.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::EventType;
use crate::domain::{EventEnvelope, ParseError};

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

/// A producer's message; `E` is the payload's type: `Value`, or `IgnoredAny` to read the other
/// fields alone.
#[derive(Deserialize)]
struct EventMessageIn<E = Value> {
    event_type: String,
    event: E,
    #[serde(default)]
    event_id: Option<Uuid>,
    #[serde(default)]
    instance_id: Option<Uuid>,
    #[serde(default)]
    instance_name: Option<String>,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
}

impl EventMessageIn {
    /// Only the small fields go through serde (the payload is skipped, then moved out as it
    /// is): tracking the path of every value in a payload would cost more than the rest of
    /// the parse. A message that does not parse this way is parsed again with paths, for the
    /// error that names where it is wrong.
    fn parse(mut value: Value) -> Result<Self, ParseError> {
        if let Ok(fields) = EventMessageIn::<serde::de::IgnoredAny>::deserialize(&value)
            && let Some(event) = value.as_object_mut().and_then(|object| object.remove("event"))
        {
            let EventMessageIn { event_type, event: _, event_id, instance_id, instance_name, created_at } = fields;
            return Ok(Self { event_type, event, event_id, instance_id, instance_name, created_at });
        }
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                ParseError::new(e.inner().to_string())
            } else {
                ParseError::new(format!("{path}: {}", e.inner()))
            }
        })
    }
}

/// Counts the bytes of a serialisation without keeping them.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A stable event id for a queue message the producer gave none: the same message id always
/// yields the same event id, so a redelivered message is recognised.
pub fn id_from_message_id(message_id: &str) -> Uuid {
    Uuid::new_v5(&MESSAGE_ID_NAMESPACE, message_id.as_bytes())
}

/// Parses and validates a OneFuzz-shaped event message (SPEC §4 shape 1), filling defaults.
pub fn parse_event_message(
    value: Value,
    fallback_id: Uuid,
    defaults: &IngestDefaults,
    now: DateTime<Utc>,
) -> Result<EventEnvelope, ParseError> {
    let message = EventMessageIn::parse(value)?;
    let event = message.event;
    let event_type = EventType::parse(&message.event_type)?;
    let mut size = ByteCount(0);
    let size = serde_json::to_writer(&mut size, &event).map(|()| size.0).unwrap_or(usize::MAX);
    if size > MAX_EVENT_BYTES {
        return Err(ParseError::new(format!("event: {size} bytes is over the {MAX_EVENT_BYTES}-byte limit")));
    }
    event_type.validate(&event)?;
    Ok(EventEnvelope {
        event_id: message.event_id.unwrap_or(fallback_id),
        event_type,
        event: event.into(),
        instance_id: message.instance_id.unwrap_or(defaults.instance_id),
        instance_name: message.instance_name.unwrap_or_else(|| defaults.instance_name.clone()),
        created_at: message.created_at.unwrap_or(now),
    })
}
