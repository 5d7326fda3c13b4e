use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

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

/// SQS counts delays in whole seconds: a wait is rounded up, so a retry never goes early (a
/// jittered 0.8 s must not become 0), and capped at [`MAX_QUEUE_DELAY`].
fn delay_seconds(delay: Duration) -> i32 {
    let whole = delay.min(MAX_QUEUE_DELAY).as_secs_f64().ceil();
    whole as i32
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, message: &QueueMessage, delay: Duration) -> Result<(), QueueError> {
        let delay_seconds = delay_seconds(delay);
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

    /// Ten messages per `SendMessageBatch` call, SQS's maximum.
    async fn send_batch(&self, messages: &[QueueMessage], delay: Duration) -> Result<(), QueueError> {
        let delay_seconds = delay_seconds(delay);
        for chunk in messages.chunks(10) {
            let mut request = self.client.send_message_batch().queue_url(&self.queue_url);
            for (i, message) in chunk.iter().enumerate() {
                let entry = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(message.to_body()?)
                    .delay_seconds(delay_seconds)
                    .build()
                    .map_err(|e| QueueError::Send(e.to_string()))?;
                request = request.entries(entry);
            }
            let sent = request.send().await.map_err(|e| QueueError::Send(DisplayErrorContext(&e).to_string()))?;
            if let Some(failed) = sent.failed().first() {
                return Err(QueueError::Send(format!(
                    "{} of {} messages refused: {}",
                    sent.failed().len(),
                    chunk.len(),
                    failed.message().unwrap_or(failed.code())
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_to_whole_seconds_and_stop_at_the_cap() {
        assert_eq!(delay_seconds(Duration::ZERO), 0);
        assert_eq!(delay_seconds(Duration::from_millis(800)), 1);
        assert_eq!(delay_seconds(Duration::from_millis(1200)), 2);
        assert_eq!(delay_seconds(Duration::from_secs(5)), 5);
        assert_eq!(delay_seconds(Duration::from_secs(3600)), 900);
    }
}
