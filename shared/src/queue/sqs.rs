use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::error::DisplayErrorContext;

use super::{MAX_QUEUE_DELAY, Queue, QueueError, QueueMessage};

/// The events queue in AWS. Delays above SQS's cap are clamped here; callers that need longer
/// waits re-send on arrival (the sender's retry hops).
#[derive(Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self { client, queue_url: queue_url.into() }
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, message: &QueueMessage, delay: Duration) -> Result<(), QueueError> {
        let delay_seconds = delay.min(MAX_QUEUE_DELAY).as_secs() as i32;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(message.to_body()?)
            .delay_seconds(delay_seconds)
            .send()
            .await
            .map_err(|e| QueueError::Send(DisplayErrorContext(&e).to_string()))?;
        Ok(())
    }
}
