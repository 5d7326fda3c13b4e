use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::Notify;
use uuid::Uuid;

use super::{Queue, QueueError, QueueMessage};
use crate::store::{LocalTasks, StoreError};

/// The local-mode queue: messages are rows of the embedded store's task table, so a restart
/// loses none. The local worker waits on `notified` and claims due tasks from `tasks`.
#[derive(Clone)]
pub struct LocalQueue {
    tasks: LocalTasks,
    wake: Arc<Notify>,
}

impl LocalQueue {
    pub fn new(tasks: LocalTasks) -> Self {
        Self { tasks, wake: Arc::new(Notify::new()) }
    }

    pub fn tasks(&self) -> &LocalTasks {
        &self.tasks
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
        self.tasks.put(Uuid::new_v4(), Utc::now() + delay, message.to_body()?).await.map_err(|err| match err {
            StoreError::Unavailable(detail) => QueueError::Unavailable(detail),
            other => QueueError::Send(other.to_string()),
        })?;
        self.wake.notify_one();
        Ok(())
    }
}
