//! Response bodies. Built field by field from domain records: no view has a place for a
//! secret, so none can leak.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::domain::{
    Attempt, DeliveryLog, DeliveryState, EventPattern, MessageFormat, Webhook, WebhookId, WebhookState,
};
use crate::events::{CatalogError, EventType};

/// What create, update and list show, as in the OneFuzz seed: no URL (chat-tool URLs carry
/// credentials) and `message_format` only when it was set.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookSummary {
    pub webhook_id: WebhookId,
    pub name: String,
    pub event_types: Vec<EventPattern>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_format: Option<MessageFormat>,
}

impl From<&Webhook> for WebhookSummary {
    fn from(webhook: &Webhook) -> Self {
        Self {
            webhook_id: webhook.webhook_id,
            name: webhook.name.as_str().to_owned(),
            event_types: webhook.event_types.clone(),
            message_format: webhook.message_format,
        }
    }
}

/// What get shows: the summary plus the URL and non-secret metadata. Of the custom headers
/// only the names: their values are write-only, like the secret.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookDetail {
    pub webhook_id: WebhookId,
    pub name: String,
    pub url: String,
    pub event_types: Vec<EventPattern>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_format: Option<MessageFormat>,
    pub has_secret_token: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_names: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_second: Option<u32>,
    pub state: WebhookState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&Webhook> for WebhookDetail {
    fn from(webhook: &Webhook) -> Self {
        Self {
            webhook_id: webhook.webhook_id,
            name: webhook.name.as_str().to_owned(),
            url: webhook.url.as_str().to_owned(),
            event_types: webhook.event_types.clone(),
            message_format: webhook.message_format,
            has_secret_token: webhook.secret_token.is_some(),
            header_names: webhook.headers.as_ref().map(|h| h.names().into_iter().map(str::to_owned).collect()),
            rate_limit_per_second: webhook.rate_limit_per_second.map(|limit| limit.per_second()),
            state: webhook.state,
            disabled_reason: webhook.disabled_reason.clone(),
            created_at: webhook.created_at,
            updated_at: webhook.updated_at,
        }
    }
}

/// A delivery log entry (SPEC §6.6). The compat route adds OneFuzz's `event`,
/// `instance_id` and `instance_name`.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntryView {
    pub webhook_id: WebhookId,
    pub event_id: Uuid,
    pub event_type: EventType,
    pub state: DeliveryState,
    pub try_count: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub attempts: Vec<Attempt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
}

impl LogEntryView {
    pub fn rest(entry: &DeliveryLog) -> Self {
        Self {
            webhook_id: entry.webhook_id,
            event_id: entry.event_id,
            event_type: entry.event_type,
            state: entry.state,
            try_count: entry.try_count,
            created_at: entry.created_at,
            updated_at: entry.updated_at,
            next_attempt_at: entry.next_attempt_at.filter(|_| !entry.state.is_final()),
            attempts: entry.attempts.clone(),
            event: None,
            instance_id: None,
            instance_name: None,
        }
    }

    pub fn compat(entry: &DeliveryLog) -> Self {
        Self {
            event: Some(Value::clone(&entry.envelope.event)),
            instance_id: Some(entry.envelope.instance_id),
            instance_name: Some(entry.envelope.instance_name.clone()),
            ..Self::rest(entry)
        }
    }
}

/// A page of a REST listing: `{"items": [...], "next": cursor-or-null}`.
#[derive(Debug, Serialize)]
pub struct PageView<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// A listing that is always complete: `{"items": [...]}`.
#[derive(Debug, Serialize)]
pub struct ItemsView<T> {
    pub items: Vec<T>,
}

/// One type of the catalog (SPEC §11).
#[derive(Debug, Serialize)]
pub struct EventTypeView {
    pub name: EventType,
    pub schema: &'static Value,
    pub example: &'static Value,
    pub operational: bool,
}

impl EventTypeView {
    pub fn of(event_type: EventType) -> Result<Self, CatalogError> {
        Ok(Self {
            name: event_type,
            schema: event_type.schema()?,
            example: event_type.example()?,
            operational: event_type.is_operational(),
        })
    }
}
