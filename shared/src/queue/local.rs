use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::Notify;
use uuid::Uuid;

use super::{Queue, QueueError, QueueMessage};
use crate::store::{PendingTask, Store, StoreError};

/// The local-mode queue: messages are rows in the embedded store, so a restart loses none.
/// The local sender waits on `notified` and polls `Store::due_tasks`.
#[derive(Clone)]
pub struct LocalQueue {
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
}

impl LocalQueue {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, wake: Arc::new(Notify::new()) }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Resolves when a message was sent since the last wake-up.
    pub async fn notified(&self) {
        self.wake.notified().await;
    }
}

#[async_trait]
impl Queue for LocalQueue {
    async fn send(&self, message: &QueueMessage, delay: Duration) -> Result<(), QueueError> {
        let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero());
        let task = PendingTask { task_id: Uuid::new_v4(), due_at: Utc::now() + delay, body: message.to_body()? };
        self.store.put_task(&task).await.map_err(|err| match err {
            StoreError::Unavailable(detail) => QueueError::Unavailable(detail),
            other => QueueError::Send(other.to_string()),
        })?;
        self.wake.notify_one();
        Ok(())
    }
}
