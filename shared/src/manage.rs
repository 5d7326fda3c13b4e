//! Managing webhooks: the domain operations behind the HTTP routes and the CLI.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::App;
pub use crate::domain::NewWebhook;
use crate::domain::{
    CustomHeaders, DeliveryLog, DeliveryState, EventEnvelope, EventPattern, MessageFormat, RateLimit, RotatedSecret,
    SecretToken, Webhook, WebhookId, WebhookName, WebhookUrl, dedup_event_types,
};
use crate::events::EventType;
use crate::queue::{DeliverTask, QueueError, QueueMessage, QueueTask};
use crate::store::{Page, PageRequest, StoreError};

/// Why a domain operation did not happen. `api` maps each to a status once; nothing here
/// knows about HTTP.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("unable to find webhook")]
    WebhookNotFound,
    #[error("no delivery of event {event_id} to webhook {webhook_id}")]
    DeliveryNotFound { webhook_id: WebhookId, event_id: Uuid },
    /// Its retries are still scheduled; an extra attempt now would cut that series short.
    #[error("the delivery of event {event_id} is still {state}; redeliver it once it has succeeded or failed")]
    DeliveryInProgress { event_id: Uuid, state: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("enqueue task failed: {0}")]
    Enqueue(String),
}

/// A valid change to a webhook; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    pub name: Option<WebhookName>,
    pub url: Option<WebhookUrl>,
    pub event_types: Option<Vec<EventPattern>>,
    /// `Some(None)` removes the secret.
    pub secret_token: Option<Option<SecretToken>>,
    pub message_format: Option<MessageFormat>,
    /// Replaces the whole set; `Some(None)` removes every header.
    pub headers: Option<Option<CustomHeaders>>,
    /// `Some(None)` removes the limit.
    pub rate_limit_per_second: Option<Option<RateLimit>>,
    /// Turns a disabled webhook back on.
    pub enable: bool,
}

/// How often an update retries when another writer changed the webhook in between.
const UPDATE_ATTEMPTS: usize = 3;

impl App {
    pub async fn create_webhook(&self, new: NewWebhook) -> Result<Webhook, ManageError> {
        let webhook = Webhook::new(new, Utc::now());
        self.store.create_webhook(&webhook).await?;
        tracing::info!(webhook_id = %webhook.webhook_id, "webhook created");
        Ok(webhook)
    }

    pub async fn get_webhook(&self, id: WebhookId) -> Result<Webhook, ManageError> {
        self.store.get_webhook(id).await?.ok_or(ManageError::WebhookNotFound)
    }

    pub async fn list_webhooks(
        &self,
        event_type: Option<EventType>,
        page: PageRequest,
    ) -> Result<Page<Webhook>, ManageError> {
        Ok(self.store.list_webhooks(event_type, page).await?)
    }

    /// A webhook's newest log entries, at most `max`, following pages; for the compat route
    /// that answers with one array.
    pub async fn recent_logs(&self, id: WebhookId, max: usize) -> Result<Vec<DeliveryLog>, ManageError> {
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
    pub async fn all_webhooks(&self) -> Result<Vec<Webhook>, ManageError> {
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
    pub async fn update_webhook(&self, id: WebhookId, patch: WebhookPatch) -> Result<Webhook, ManageError> {
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self.get_webhook(id).await?;
            let updated = apply_patch(current, &patch, Utc::now(), self.config.secret_rotation_grace);
            match self.store.update_webhook(&updated).await {
                Ok(()) => {
                    if patch.enable {
                        // A re-enabled webhook starts with a clean record, or its old run of
                        // failures would disable it again at the first failure.
                        self.store.clear_failures(id).await?;
                    }
                    tracing::info!(webhook_id = %id, "webhook updated");
                    return Ok(updated);
                }
                Err(StoreError::Conflict) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }

    pub async fn delete_webhook(&self, id: WebhookId) -> Result<(), ManageError> {
        self.store.delete_webhook(id).await?;
        tracing::info!(webhook_id = %id, "webhook deleted");
        Ok(())
    }

    /// Queues a signed `ping` for this webhook alone, whatever it subscribes to.
    pub async fn ping_webhook(&self, id: WebhookId) -> Result<Uuid, ManageError> {
        self.get_webhook(id).await?;
        let ping_id = Uuid::new_v4();
        let envelope = EventEnvelope {
            event_id: Uuid::new_v4(),
            event_type: EventType::Ping,
            event: json!({ "ping_id": ping_id }).into(),
            instance_id: self.config.instance_id,
            instance_name: self.config.instance_name.clone(),
            created_at: Utc::now(),
        };
        let task = QueueTask::Deliver(DeliverTask::ping(id, envelope));
        self.enqueue(QueueMessage::Task(task)).await?;
        tracing::info!(webhook_id = %id, %ping_id, "ping queued");
        Ok(ping_id)
    }

    /// Accepts a producer's event for fan-out.
    pub async fn publish_event(&self, envelope: EventEnvelope) -> Result<Uuid, ManageError> {
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
    ) -> Result<Page<DeliveryLog>, ManageError> {
        self.get_webhook(id).await?;
        Ok(self.store.list_deliveries(id, state, page).await?)
    }

    /// One delivery's log entry.
    pub async fn get_log(&self, id: WebhookId, event_id: Uuid) -> Result<DeliveryLog, ManageError> {
        self.get_webhook(id).await?;
        self.store.get_delivery(id, event_id).await?.ok_or(ManageError::DeliveryNotFound { webhook_id: id, event_id })
    }

    /// Sends a finished (succeeded or failed) delivery again from its stored payload.
    pub async fn redeliver(&self, id: WebhookId, event_id: Uuid) -> Result<(), ManageError> {
        let entry = self.get_log(id, event_id).await?;
        if !entry.state.is_final() {
            return Err(ManageError::DeliveryInProgress { event_id, state: entry.state.as_str() });
        }
        let task = QueueTask::Deliver(DeliverTask::redeliver(id, entry.try_count, entry.envelope));
        self.enqueue(QueueMessage::Task(task)).await?;
        tracing::info!(webhook_id = %id, %event_id, "redelivery queued");
        Ok(())
    }

    /// Queues every failed delivery created since `since` again; returns how many.
    pub async fn recover(&self, id: WebhookId, since: DateTime<Utc>) -> Result<usize, ManageError> {
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
    async fn enqueue(&self, message: QueueMessage) -> Result<(), ManageError> {
        let queue = self.queue.clone();
        let sent = tokio::spawn(async move { queue.send(&message, Duration::ZERO).await });
        match sent.await {
            Ok(result) => Ok(result?),
            Err(join) => Err(ManageError::Enqueue(join.to_string())),
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
        webhook.event_types = dedup_event_types(event_types.clone());
    }
    if let Some(headers) = &patch.headers {
        webhook.headers = headers.clone();
    }
    if let Some(limit) = patch.rate_limit_per_second {
        webhook.rate_limit_per_second = limit;
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
        webhook.enable(now);
    } else {
        webhook.changed(now);
    }
    webhook
}
