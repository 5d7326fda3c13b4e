//! Where messages that can never be delivered go: not retried, not dropped, kept with the
//! reason so an operator can see and replay them.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::MessageAttributeValue;

use super::QueueError;

#[async_trait]
pub trait DeadLetters: Send + Sync {
    async fn send(&self, body: &str, reason: &str) -> Result<(), QueueError>;
}

/// The dead-letter queue in AWS; the reason travels as the `reason` message attribute.
pub struct SqsDeadLetters {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsDeadLetters {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self { client, queue_url: queue_url.into() }
    }
}

#[async_trait]
impl DeadLetters for SqsDeadLetters {
    async fn send(&self, body: &str, reason: &str) -> Result<(), QueueError> {
        let attribute = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(reason)
            .build()
            .map_err(|e| QueueError::Send(e.to_string()))?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_attributes("reason", attribute)
            .send()
            .await
            .map_err(|e| QueueError::Send(DisplayErrorContext(&e).to_string()))?;
        Ok(())
    }
}

/// Local mode: one JSON line per dead letter in a file beside the store.
pub struct FileDeadLetters {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileDeadLetters {
    pub fn new(path: PathBuf) -> Self {
        Self { path, lock: Mutex::new(()) }
    }
}

#[async_trait]
impl DeadLetters for FileDeadLetters {
    async fn send(&self, body: &str, reason: &str) -> Result<(), QueueError> {
        let line = serde_json::json!({ "at": chrono::Utc::now(), "reason": reason, "body": body }).to_string();
        let _guard = self.lock.lock().map_err(|_| QueueError::Send("dead-letter lock poisoned".into()))?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| QueueError::Send(format!("{}: {e}", self.path.display())))?;
        writeln!(file, "{line}").map_err(|e| QueueError::Send(format!("{}: {e}", self.path.display())))
    }
}
