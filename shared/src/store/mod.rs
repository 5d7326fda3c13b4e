//! Storage of webhooks, their subscriptions and delivery log entries. One trait, two
//! implementations: DynamoDB in AWS and an embedded SQLite file locally. Both
//! pass the same conformance suite (`conformance.rs`). The local queue's tasks are not here:
//! [`LocalTasks`] keeps them beside the embedded store.

#[cfg(test)]
pub(crate) mod conformance;
mod cursor;
mod dynamo;
mod embedded;
#[cfg(test)]
mod embedded_tests;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use uuid::Uuid;

pub use cursor::Cursor;
pub use dynamo::{DynamoStore, MigrationReport, TableDefinition, migrate_legacy_layout};
pub use embedded::{EmbeddedStore, LocalTasks, PendingTask};

use crate::domain::{DeliveryLog, DeliveryState, EventEnvelope, Gcra, Webhook, WebhookId};
use crate::events::EventType;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record changed since it was read (its `version` moved on), or already exists.
    #[error("conflicting write")]
    Conflict,
    #[error("not found")]
    NotFound,
    #[error("invalid pagination cursor")]
    BadCursor,
    #[error("storage backend failed: {0}")]
    Backend(String),
    /// The store cannot write for now (disk full, database locked or busy, I/O error): the
    /// caller may retry later, and nothing it was told was accepted is lost.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    pub fn backend(err: impl std::fmt::Display) -> Self {
        Self::Backend(err.to_string())
    }
}

/// A page request: at most `limit` items after `cursor`.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: usize,
    pub cursor: Option<Cursor>,
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Where the next page starts; `None` when this page is the last.
    pub next: Option<Cursor>,
}

/// Where a log entry is: its webhook and event, and the event's creation time, which orders a
/// webhook's log. A sender always knows all three from the message it handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryKey {
    pub webhook_id: WebhookId,
    pub event_id: Uuid,
    pub created_at: DateTime<Utc>,
}

impl DeliveryKey {
    pub fn of(webhook_id: WebhookId, envelope: &EventEnvelope) -> Self {
        Self { webhook_id, event_id: envelope.event_id, created_at: envelope.created_at }
    }
}

impl DeliveryLog {
    pub fn key(&self) -> DeliveryKey {
        DeliveryKey { webhook_id: self.webhook_id, event_id: self.event_id, created_at: self.created_at }
    }
}

/// How fresh a read must be. An eventually consistent read costs half, and is enough where a
/// conditional write catches a stale answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    Latest,
    MaybeStale,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Stores a new webhook and its subscriptions atomically. `Conflict` if the id exists.
    async fn create_webhook(&self, webhook: &Webhook) -> Result<(), StoreError>;

    async fn get_webhook(&self, id: WebhookId) -> Result<Option<Webhook>, StoreError>;

    /// The webhook as a sender needs it: a read that may lag a write by a moment (a change
    /// made a second ago may miss one delivery), at half the cost where that matters.
    async fn webhook_for_delivery(&self, id: WebhookId) -> Result<Option<Webhook>, StoreError> {
        self.get_webhook(id).await
    }

    /// Replaces a webhook whose stored `version` is `webhook.version - 1`, moving its
    /// subscriptions to the new event types atomically. `Conflict` if the version moved on,
    /// `NotFound` if it is gone.
    async fn update_webhook(&self, webhook: &Webhook) -> Result<(), StoreError>;

    /// Deletes a webhook and its subscriptions atomically. `NotFound` if it does not exist.
    async fn delete_webhook(&self, id: WebhookId) -> Result<(), StoreError>;

    /// Webhooks in a stable order (by id), optionally only those subscribed to `event_type`.
    async fn list_webhooks(
        &self,
        event_type: Option<EventType>,
        page: PageRequest,
    ) -> Result<Page<Webhook>, StoreError>;

    /// Every webhook subscribed to `event_type`, enabled or not. Cost grows with the number
    /// of subscribers, never with the number of webhooks.
    async fn subscribers(&self, event_type: EventType) -> Result<Vec<Webhook>, StoreError>;

    /// Stores a new log entry unless one exists for its (webhook, event). Returns whether it
    /// was inserted.
    async fn insert_delivery(&self, entry: &DeliveryLog) -> Result<bool, StoreError>;

    /// Inserts each entry as `insert_delivery` would; returns, in order, whether each was
    /// inserted. Not atomic as a whole. Fan-out uses it to create an event's entries together.
    async fn insert_deliveries(&self, entries: &[DeliveryLog]) -> Result<Vec<bool>, StoreError> {
        join_all(entries.iter().map(|entry| self.insert_delivery(entry))).await.into_iter().collect()
    }

    /// An operator's look-up by (webhook, event), without the event's time.
    async fn get_delivery(&self, webhook_id: WebhookId, event_id: Uuid) -> Result<Option<DeliveryLog>, StoreError>;

    /// The sender's look-up, where the key is known.
    async fn load_delivery(&self, key: &DeliveryKey, _read: Read) -> Result<Option<DeliveryLog>, StoreError> {
        self.get_delivery(key.webhook_id, key.event_id).await
    }

    /// Several entries at once, latest state; `None` where there is none.
    async fn load_deliveries(&self, keys: &[DeliveryKey]) -> Result<Vec<Option<DeliveryLog>>, StoreError> {
        join_all(keys.iter().map(|key| self.load_delivery(key, Read::Latest))).await.into_iter().collect()
    }

    /// Replaces a log entry whose stored `version` is `entry.version - 1`; `Conflict` otherwise.
    /// The entry's envelope is the one it was inserted with: it never changes.
    async fn update_delivery(&self, entry: &DeliveryLog) -> Result<(), StoreError>;

    /// A webhook's log entries, newest first, optionally only in `state`.
    async fn list_deliveries(
        &self,
        webhook_id: WebhookId,
        state: Option<DeliveryState>,
        page: PageRequest,
    ) -> Result<Page<DeliveryLog>, StoreError>;

    /// A webhook's entries in `state` created at or after `since`, oldest first.
    async fn deliveries_since(
        &self,
        webhook_id: WebhookId,
        state: DeliveryState,
        since: DateTime<Utc>,
    ) -> Result<Vec<DeliveryLog>, StoreError>;

    /// Notes that deliveries to the webhook failed at `now`, and returns since when they
    /// have (the start of the current run of failures, `now` if none was running). Written
    /// without a condition: concurrent notes agree, so they never contend.
    async fn note_failure(&self, id: WebhookId, now: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError>;

    /// Starts the run of failures again at `from`: a success came after the noted start.
    async fn restart_failures(&self, id: WebhookId, from: DateTime<Utc>) -> Result<(), StoreError>;

    /// Forgets the run of failures (the webhook was enabled again).
    async fn clear_failures(&self, id: WebhookId) -> Result<(), StoreError>;

    /// Whether any delivery to the webhook succeeded at or after `since`. Successes write
    /// nothing beyond their log entry, so this is how a run of failures learns it ended.
    async fn succeeded_since(&self, id: WebhookId, since: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Reserves the next slot under a webhook's rate limit at `now` and returns when it starts
    /// (`limit.reserve` applied to the stored theoretical arrival time, in one atomic write).
    /// Every sender shares that time, so the limit holds across them, and concurrent
    /// reservations each get a slot of their own without reading first.
    async fn reserve_rate_slot(
        &self,
        id: WebhookId,
        limit: Gcra,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError>;

    /// Forgets log entries past their `expires_at`. DynamoDB does this itself through TTL.
    async fn purge_expired(&self, _now: DateTime<Utc>) -> Result<usize, StoreError> {
        Ok(0)
    }
}
