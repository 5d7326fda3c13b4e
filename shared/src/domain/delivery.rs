use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::WebhookId;
use crate::events::EventType;

/// One event as the sender delivers it, after ingestion filled in every default. Kept with
/// each log entry so a failed delivery can be redelivered without the producer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub event_id: Uuid,
    pub event_type: EventType,
    pub event: Value,
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

impl DeliveryLog {
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
            created_at: now,
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
}
