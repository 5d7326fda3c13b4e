//! Driving the sender without waiting: a queue that records what is sent (delays included),
//! and a pump that feeds those messages back to the sender at once (or, for tests of timing,
//! once their delays have passed).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use webhooks::delivery::{CidrList, MessageOutcome, Sender};
use webhooks::domain::{DeliveryLog, WebhookId};
use webhooks::queue::{DeadLetters, Queue, QueueError, QueueMessage};
use webhooks::store::{EmbeddedStore, Store};
use webhooks::{App, Config};

/// A queue that keeps every message with its delay, for tests to inspect and pump.
#[derive(Clone, Default)]
pub struct RecordingQueue {
    /// Each message with its delay and when it was sent.
    sent: Arc<Mutex<Vec<(String, Duration, Instant)>>>,
}

#[async_trait]
impl Queue for RecordingQueue {
    async fn send(&self, message: &QueueMessage, delay: Duration) -> Result<(), QueueError> {
        self.sent.lock().expect("queue").push((message.to_body()?, delay, Instant::now()));
        Ok(())
    }
}

impl RecordingQueue {
    /// What has been sent and not taken, with delays, leaving it queued.
    pub fn peek(&self) -> Vec<(String, Duration)> {
        self.sent.lock().expect("queue").iter().map(|(body, delay, _)| (body.clone(), *delay)).collect()
    }

    pub fn take(&self) -> Vec<(String, Duration)> {
        self.take_due().into_iter().map(|(body, delay, _)| (body, delay)).collect()
    }

    /// Every message with its delay and when it becomes visible.
    pub fn take_due(&self) -> Vec<(String, Duration, Instant)> {
        let sent = std::mem::take(&mut *self.sent.lock().expect("queue"));
        sent.into_iter().map(|(body, delay, at)| (body, delay, at + delay)).collect()
    }
}

#[derive(Clone, Default)]
pub struct RecordingDeadLetters {
    pub sent: Arc<Mutex<Vec<(String, String)>>>,
}

#[async_trait]
impl DeadLetters for RecordingDeadLetters {
    async fn send(&self, body: &str, reason: &str) -> Result<(), QueueError> {
        self.sent.lock().expect("dead letters").push((body.to_owned(), reason.to_owned()));
        Ok(())
    }
}

/// The sender on the embedded store with a recording queue, and the API app on the same
/// store and queue, so tests can manage webhooks over HTTP and watch deliveries.
pub struct TestSender {
    pub sender: Sender,
    pub app: App,
    pub store: Arc<dyn Store>,
    pub queue: RecordingQueue,
    pub dead_letters: RecordingDeadLetters,
}

impl TestSender {
    /// Loopback is allowed as a target; retries wait 0 s so tests need not sleep.
    pub fn new() -> Self {
        Self::with(Config { retry_schedule: vec![Duration::ZERO; 3], ..Config::default() }, CidrList::loopback())
    }

    pub fn with(config: Config, allowed: CidrList) -> Self {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory().expect("store"));
        let queue = RecordingQueue::default();
        let dead_letters = RecordingDeadLetters::default();
        let config = Arc::new(config);
        let sender = Sender::new(
            store.clone(),
            Arc::new(queue.clone()),
            Arc::new(dead_letters.clone()),
            config.clone(),
            &allowed,
        )
        .expect("sender");
        let app = App { store: store.clone(), queue: Arc::new(queue.clone()), config };
        Self { sender, app, store, queue, dead_letters }
    }

    pub async fn handle(&self, body: &str) -> MessageOutcome {
        self.sender.handle_message(body, &uuid::Uuid::new_v4().to_string()).await
    }

    /// Hands every queued message to the sender, once; returns how many there were.
    pub async fn pump_once(&self) -> usize {
        let messages = self.queue.take();
        for (body, _) in &messages {
            self.handle(body).await;
        }
        messages.len()
    }

    /// Pumps until the queue stays empty (bounded, so a retry loop cannot hang a test).
    pub async fn pump(&self) {
        for _ in 0..50 {
            if self.pump_once().await == 0 {
                return;
            }
        }
        panic!("the queue never drained");
    }

    /// Pumps as a queue would, each message once its delay has passed, until the queue stays
    /// empty (bounded).
    pub async fn pump_in_time(&self) {
        for _ in 0..200 {
            let mut messages = self.queue.take_due();
            if messages.is_empty() {
                return;
            }
            messages.sort_by_key(|(_, _, due)| *due);
            for (body, _, due) in &messages {
                tokio::time::sleep_until((*due).into()).await;
                self.handle(body).await;
            }
        }
        panic!("the queue never drained");
    }

    pub async fn log(&self, webhook_id: &str, event_id: uuid::Uuid) -> DeliveryLog {
        let id = WebhookId::parse(webhook_id, "id").expect("id");
        self.store.get_delivery(id, event_id).await.expect("get").expect("a log entry")
    }
}

impl Default for TestSender {
    fn default() -> Self {
        Self::new()
    }
}
