//! The delivery queue port: where events and delivery tasks wait for the sender. SQS in AWS;
//! in local mode a queue kept in the embedded store, so pending work survives restarts.

mod dead_letter;
mod local;
mod sqs;
mod task;

use std::time::Duration;

use async_trait::async_trait;

pub use dead_letter::{DeadLetters, FileDeadLetters, SqsDeadLetters};
pub use local::LocalQueue;
pub use sqs::SqsQueue;
pub use task::{DeliverReason, DeliverTask, QueueTask};

use crate::domain::EventEnvelope;

/// SQS refuses delays above 15 minutes; longer waits hop through the queue.
pub const MAX_QUEUE_DELAY: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue send failed: {0}")]
    Send(String),
    /// The queue cannot take messages for now (local mode: the store cannot write).
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    #[error("queue message could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What goes on the queue: a producer-shaped event message (SPEC §4 shape 1), or a task.
#[derive(Debug, Clone, PartialEq)]
pub enum QueueMessage {
    Event(EventEnvelope),
    Task(QueueTask),
}

impl QueueMessage {
    pub fn to_body(&self) -> Result<String, serde_json::Error> {
        match self {
            Self::Event(envelope) => serde_json::to_string(envelope),
            Self::Task(task) => serde_json::to_string(task),
        }
    }
}

#[async_trait]
pub trait Queue: Send + Sync {
    /// Sends one message, visible after `delay` (SQS caps it at [`MAX_QUEUE_DELAY`]).
    async fn send(&self, message: &QueueMessage, delay: Duration) -> Result<(), QueueError>;

    /// Sends several messages; an error means some may not have been sent.
    async fn send_batch(&self, messages: &[QueueMessage], delay: Duration) -> Result<(), QueueError> {
        for message in messages {
            self.send(message, delay).await?;
        }
        Ok(())
    }
}

/// The queue of a function that has none configured: sending is an error, reported as a 500
/// with the cause in the log. Lets read-only functions start without `EVENTS_QUEUE_URL`.
pub struct UnconfiguredQueue;

#[async_trait]
impl Queue for UnconfiguredQueue {
    async fn send(&self, _message: &QueueMessage, _delay: Duration) -> Result<(), QueueError> {
        Err(QueueError::Send("EVENTS_QUEUE_URL is not configured for this function".into()))
    }
}
