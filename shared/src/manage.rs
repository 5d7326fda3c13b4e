//! Managing webhooks: the domain operations behind the HTTP routes and the CLI.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::App;
use crate::api::ApiError;
use crate::domain::{
    DeliveryLog, DeliveryState, EventEnvelope, MessageFormat, RotatedSecret, SecretToken, Webhook, WebhookId,
    WebhookName, WebhookState, WebhookUrl,
};
use crate::events::EventType;
use crate::queue::{DeliverReason, DeliverTask, QueueMessage, QueueTask};
use crate::store::{Page, PageRequest, StoreError};

/// A valid new webhook, ready to store.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub name: WebhookName,
    pub url: WebhookUrl,
    pub event_types: Vec<EventType>,
    pub secret_token: Option<SecretToken>,
    pub message_format: Option<MessageFormat>,
}

/// A valid change to a webhook; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    pub name: Option<WebhookName>,
    pub url: Option<WebhookUrl>,
    pub event_types: Option<Vec<EventType>>,
    /// `Some(None)` removes the secret.
    pub secret_token: Option<Option<SecretToken>>,
    pub message_format: Option<MessageFormat>,
    /// Turns a disabled webhook back on.
    pub enable: bool,
}

/// How often an update retries when another writer changed the webhook in between.
const UPDATE_ATTEMPTS: usize = 3;

impl App {
    pub async fn create_webhook(&self, new: NewWebhook) -> Result<Webhook, ApiError> {
        let webhook =
            Webhook::new(new.name, new.url, new.event_types, new.secret_token, new.message_format, Utc::now());
        self.store.create_webhook(&webhook).await?;
        tracing::info!(webhook_id = %webhook.webhook_id, "webhook created");
        Ok(webhook)
    }

    pub async fn get_webhook(&self, id: WebhookId) -> Result<Webhook, ApiError> {
        self.store.get_webhook(id).await?.ok_or(ApiError::WebhookNotFound)
    }

    pub async fn list_webhooks(
        &self,
        event_type: Option<EventType>,
        page: PageRequest,
    ) -> Result<Page<Webhook>, ApiError> {
        Ok(self.store.list_webhooks(event_type, page).await?)
    }

    /// A webhook's newest log entries, at most `max`, following pages; for the compat route
    /// that answers with one array.
    pub async fn recent_logs(&self, id: WebhookId, max: usize) -> Result<Vec<DeliveryLog>, ApiError> {
        self.get_webhook(id).await?;
        let mut entries = Vec::new();
        let mut cursor = None;
        while entries.len() < max {
            let page = self.store.list_deliveries(id, None, PageRequest { limit: 100.min(max), cursor }).await?;
            entries.extend(page.items);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        entries.truncate(max);
        Ok(entries)
    }

    /// Every webhook, following pages; for the compat route that answers with one array.
    pub async fn all_webhooks(&self) -> Result<Vec<Webhook>, ApiError> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.store.list_webhooks(None, PageRequest { limit: 100, cursor }).await?;
            all.extend(page.items);
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// Applies a patch, re-reading and retrying when a concurrent update won the race.
    pub async fn update_webhook(&self, id: WebhookId, patch: WebhookPatch) -> Result<Webhook, ApiError> {
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self.get_webhook(id).await?;
            let updated = apply_patch(current, &patch, Utc::now(), self.config.secret_rotation_grace);
            match self.store.update_webhook(&updated).await {
                Ok(()) => {
                    tracing::info!(webhook_id = %id, "webhook updated");
                    return Ok(updated);
                }
                Err(StoreError::Conflict) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }

    pub async fn delete_webhook(&self, id: WebhookId) -> Result<(), ApiError> {
        self.store.delete_webhook(id).await?;
        tracing::info!(webhook_id = %id, "webhook deleted");
        Ok(())
    }

    /// Queues a signed `ping` for this webhook alone, whatever it subscribes to.
    pub async fn ping_webhook(&self, id: WebhookId) -> Result<Uuid, ApiError> {
        self.get_webhook(id).await?;
        let ping_id = Uuid::new_v4();
        let envelope = EventEnvelope {
            event_id: Uuid::new_v4(),
            event_type: EventType::Ping,
            event: json!({ "ping_id": ping_id }),
            instance_id: self.config.instance_id,
            instance_name: self.config.instance_name.clone(),
            created_at: Utc::now(),
        };
        let task = QueueTask::Deliver(DeliverTask::new(id, DeliverReason::Ping, envelope));
        self.enqueue(QueueMessage::Task(task)).await?;
        tracing::info!(webhook_id = %id, %ping_id, "ping queued");
        Ok(ping_id)
    }

    /// Accepts a producer's event for fan-out.
    pub async fn publish_event(&self, envelope: EventEnvelope) -> Result<Uuid, ApiError> {
        let event_id = envelope.event_id;
        let event_type = envelope.event_type;
        self.enqueue(QueueMessage::Event(envelope)).await?;
        tracing::info!(%event_id, %event_type, "event accepted");
        Ok(event_id)
    }

    pub async fn list_logs(
        &self,
        id: WebhookId,
        state: Option<DeliveryState>,
        page: PageRequest,
    ) -> Result<Page<DeliveryLog>, ApiError> {
        self.get_webhook(id).await?;
        Ok(self.store.list_deliveries(id, state, page).await?)
    }

    /// One delivery's log entry.
    pub async fn get_log(&self, id: WebhookId, event_id: Uuid) -> Result<DeliveryLog, ApiError> {
        self.get_webhook(id).await?;
        self.store
            .get_delivery(id, event_id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no delivery of event {event_id} to webhook {id}")))
    }

    /// Sends a finished (succeeded or failed) delivery again from its stored payload.
    pub async fn redeliver(&self, id: WebhookId, event_id: Uuid) -> Result<(), ApiError> {
        let entry = self.get_log(id, event_id).await?;
        if !entry.state.is_final() {
            // Its retries are still scheduled; an extra attempt now would cut that series short.
            return Err(ApiError::Conflict(format!(
                "the delivery of event {event_id} is still {}; redeliver it once it has succeeded or failed",
                entry.state.as_str()
            )));
        }
        let task = QueueTask::Deliver(DeliverTask::redeliver(id, entry.try_count, entry.envelope));
        self.enqueue(QueueMessage::Task(task)).await?;
        tracing::info!(webhook_id = %id, %event_id, "redelivery queued");
        Ok(())
    }

    /// Queues every failed delivery created since `since` again; returns how many.
    pub async fn recover(&self, id: WebhookId, since: DateTime<Utc>) -> Result<usize, ApiError> {
        self.get_webhook(id).await?;
        let failed = self.store.deliveries_since(id, DeliveryState::Failed, since).await?;
        for entry in &failed {
            let task = QueueTask::Deliver(DeliverTask::redeliver(id, entry.try_count, entry.envelope.clone()));
            self.enqueue(QueueMessage::Task(task)).await?;
        }
        tracing::info!(webhook_id = %id, count = failed.len(), "recovery queued");
        Ok(failed.len())
    }

    /// Sends on a spawned task, so a client hanging up cannot cancel a send half-way: once
    /// begun, the message is either queued or the error is logged.
    async fn enqueue(&self, message: QueueMessage) -> Result<(), ApiError> {
        let queue = self.queue.clone();
        let sent = tokio::spawn(async move { queue.send(&message, Duration::ZERO).await });
        match sent.await {
            Ok(result) => Ok(result?),
            Err(join) => Err(ApiError::Internal(format!("enqueue task failed: {join}"))),
        }
    }
}

fn apply_patch(mut webhook: Webhook, patch: &WebhookPatch, now: DateTime<Utc>, grace: chrono::Duration) -> Webhook {
    if let Some(name) = &patch.name {
        webhook.name = name.clone();
    }
    if let Some(url) = &patch.url {
        webhook.url = url.clone();
    }
    if let Some(event_types) = &patch.event_types {
        webhook.event_types = event_types.clone();
    }
    if let Some(format) = patch.message_format {
        webhook.message_format = Some(format);
    }
    if let Some(secret) = &patch.secret_token {
        if secret.is_none() {
            // Removing the secret stops signing at once; there is nothing to roll over to.
            webhook.rotated_secret = None;
            webhook.secret_token = None;
        } else if secret.as_ref() != webhook.secret_token.as_ref() {
            // The outgoing secret keeps signing for the grace window, so receivers can roll over.
            webhook.rotated_secret =
                webhook.secret_token.take().map(|old| RotatedSecret { secret_token: old, expires_at: now + grace });
            webhook.secret_token = secret.clone();
        }
    }
    if patch.enable {
        webhook.state = WebhookState::Enabled;
        webhook.disabled_reason = None;
        webhook.failing_since = None;
    }
    webhook.updated_at = now;
    webhook.version += 1;
    webhook
}
