//! The service's own events (SPEC §10): what the sender raises when it disables a webhook or
//! gives up on a delivery. Pure constructors; the sender decides when, and never raises one
//! for a delivery of an operational event (no cascade).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::EventType;
use crate::domain::{EventEnvelope, WebhookId, WebhookName};

/// Longest `last_error` carried, in characters: enough to diagnose, small enough for any log.
pub const MAX_LAST_ERROR_CHARS: usize = 1024;

/// Namespace of the ids of operational events: the same transition always gets the same id,
/// so a sender that retries after a crash raises it once, not twice.
const OPERATIONAL_NAMESPACE: Uuid = Uuid::from_u128(0x3c0e_51a2_77d4_4b8e_9f61_0a2b_c4d5_e6f7);

/// Why the service disabled a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisabledReason {
    /// The endpoint answered `410 Gone`.
    Gone,
    /// Deliveries kept failing past `AUTO_DISABLE_AFTER_SECS`.
    Failing,
}

impl DisabledReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gone => "gone",
            Self::Failing => "failing",
        }
    }
}

/// The `webhook_disabled` payload.
pub fn webhook_disabled_payload(
    webhook_id: WebhookId,
    name: &WebhookName,
    reason: DisabledReason,
    failing_since: Option<DateTime<Utc>>,
) -> Value {
    json!({
        "webhook_id": webhook_id,
        "name": name.as_str(),
        "reason": reason.as_str(),
        "failing_since": failing_since.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    })
}

/// The `delivery_failed` payload; `last_error` is cut to [`MAX_LAST_ERROR_CHARS`].
pub fn delivery_failed_payload(
    webhook_id: WebhookId,
    event_id: Uuid,
    event_type: EventType,
    try_count: u32,
    last_status_code: Option<u16>,
    last_error: Option<&str>,
) -> Value {
    json!({
        "webhook_id": webhook_id,
        "event_id": event_id,
        "event_type": event_type.as_str(),
        "try_count": try_count,
        "last_status_code": last_status_code,
        "last_error": last_error.map(|e| e.chars().take(MAX_LAST_ERROR_CHARS).collect::<String>()),
    })
}

/// A whole `webhook_disabled` event, ready for fan-out. Its id is derived from the webhook
/// and the moment it was disabled.
pub fn webhook_disabled_event(
    webhook_id: WebhookId,
    name: &WebhookName,
    reason: DisabledReason,
    failing_since: Option<DateTime<Utc>>,
    instance: (Uuid, &str),
    disabled_at: DateTime<Utc>,
) -> EventEnvelope {
    let key = format!("webhook_disabled/{webhook_id}/{}", disabled_at.timestamp_micros());
    envelope(
        EventType::WebhookDisabled,
        &key,
        webhook_disabled_payload(webhook_id, name, reason, failing_since),
        instance,
        disabled_at,
    )
}

/// A whole `delivery_failed` event, ready for fan-out. Its id is derived from the failed
/// delivery's (webhook, event), so it is raised once per delivery.
pub fn delivery_failed_event(
    webhook_id: WebhookId,
    event_id: Uuid,
    event_type: EventType,
    try_count: u32,
    last: (Option<u16>, Option<&str>),
    instance: (Uuid, &str),
    now: DateTime<Utc>,
) -> EventEnvelope {
    let key = format!("delivery_failed/{webhook_id}/{event_id}/{try_count}");
    let payload = delivery_failed_payload(webhook_id, event_id, event_type, try_count, last.0, last.1);
    envelope(EventType::DeliveryFailed, &key, payload, instance, now)
}

fn envelope(
    event_type: EventType,
    key: &str,
    event: Value,
    (instance_id, instance_name): (Uuid, &str),
    created_at: DateTime<Utc>,
) -> EventEnvelope {
    EventEnvelope {
        event_id: Uuid::new_v5(&OPERATIONAL_NAMESPACE, key.as_bytes()),
        event_type,
        event: event.into(),
        instance_id,
        instance_name: instance_name.to_owned(),
        created_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> WebhookName {
        WebhookName::parse("billing hook").unwrap()
    }

    #[test]
    fn a_webhook_disabled_payload_validates_against_its_schema_for_each_reason() {
        let since = DateTime::from_timestamp(1_700_000_000, 0);

        let gone = webhook_disabled_payload(WebhookId::new(), &name(), DisabledReason::Gone, None);
        let failing = webhook_disabled_payload(WebhookId::new(), &name(), DisabledReason::Failing, since);

        assert_eq!(EventType::WebhookDisabled.validate(&gone), Ok(()));
        assert_eq!(EventType::WebhookDisabled.validate(&failing), Ok(()));
        assert_eq!(gone["reason"], "gone");
        assert_eq!(gone["failing_since"], Value::Null);
        assert_eq!(failing["failing_since"], "2023-11-14T22:13:20Z");
        assert_eq!(failing["name"], "billing hook");
    }

    #[test]
    fn a_delivery_failed_payload_validates_against_its_schema_with_and_without_a_status() {
        let id = WebhookId::new();
        let long_error = "e".repeat(MAX_LAST_ERROR_CHARS * 2);

        let with_status = delivery_failed_payload(id, Uuid::new_v4(), EventType::TaskCreated, 8, Some(503), None);
        let with_error =
            delivery_failed_payload(id, Uuid::new_v4(), EventType::Ping, 8, None, Some(long_error.as_str()));

        assert_eq!(EventType::DeliveryFailed.validate(&with_status), Ok(()));
        assert_eq!(EventType::DeliveryFailed.validate(&with_error), Ok(()));
        assert_eq!(with_status["last_status_code"], 503);
        assert_eq!(with_status["event_type"], "task_created");
        assert_eq!(with_error["last_error"].as_str().unwrap().len(), MAX_LAST_ERROR_CHARS);
    }

    #[test]
    fn the_schemas_refuse_a_payload_missing_a_field_or_with_a_bad_reason() {
        let mut bad_reason = webhook_disabled_payload(WebhookId::new(), &name(), DisabledReason::Gone, None);
        bad_reason["reason"] = json!("bored");
        let mut missing = delivery_failed_payload(WebhookId::new(), Uuid::new_v4(), EventType::Ping, 1, None, None);
        missing.as_object_mut().unwrap().remove("try_count");

        assert!(EventType::WebhookDisabled.validate(&bad_reason).is_err());
        assert!(EventType::DeliveryFailed.validate(&missing).is_err());
    }

    #[test]
    fn an_operational_event_gets_the_same_id_for_the_same_transition() {
        let webhook_id = WebhookId::new();
        let event_id = Uuid::new_v4();
        let now = Utc::now();
        let raise = |try_count| {
            delivery_failed_event(
                webhook_id,
                event_id,
                EventType::TaskFailed,
                try_count,
                (Some(500), None),
                (Uuid::nil(), "test"),
                now,
            )
        };

        let first = raise(8);
        let again = raise(8);
        let later_series = raise(9);

        assert_eq!(first.event_id, again.event_id);
        assert_ne!(first.event_id, later_series.event_id);
        assert_eq!(first.event_type, EventType::DeliveryFailed);
        assert_eq!(EventType::DeliveryFailed.validate(&first.event), Ok(()));
        let disabled =
            webhook_disabled_event(webhook_id, &name(), DisabledReason::Gone, None, (Uuid::nil(), "test"), now);
        assert_eq!(disabled.event_type, EventType::WebhookDisabled);
        assert_eq!(EventType::WebhookDisabled.validate(&disabled.event), Ok(()));
    }
}
