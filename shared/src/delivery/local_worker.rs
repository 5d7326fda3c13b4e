//! Local mode's sender loop: takes due messages from the store-backed queue and hands them to
//! the same [`Sender`] the Lambda runs. A message leaves the queue only once handled, so a
//! restart resumes pending deliveries and retries; handling is idempotent per (webhook, event).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::{MessageOutcome, Sender};
use crate::queue::LocalQueue;
use crate::store::PendingTask;

/// Longest sleep between polls, so messages queued by another process are noticed.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Shortest wait before a message whose handling failed for a passing reason is tried again;
/// longer if its claims on deliveries last longer ([`Sender::claim_duration`]).
const REDELIVERY_DELAY: Duration = Duration::from_secs(5);
const BATCH: usize = 64;
/// How far a task's due time moves while it is handled: past an attempt's usual timeout.
const IN_FLIGHT_HOLD: Duration = Duration::from_secs(120);

pub struct LocalWorker {
    sender: Arc<Sender>,
    queue: LocalQueue,
    in_flight: Arc<Mutex<HashSet<Uuid>>>,
}

impl LocalWorker {
    pub fn new(sender: Arc<Sender>, queue: LocalQueue) -> Self {
        Self { sender, queue, in_flight: Arc::default() }
    }

    /// Runs until `shutdown` turns true, then waits for deliveries in flight to finish.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut running = JoinSet::new();
        // At start as well as hourly: a server run for minutes at a time must still forget.
        self.purge_expired_logs().await;
        let mut last_purge = std::time::Instant::now();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let due = match self.queue.store().due_tasks(Utc::now(), BATCH).await {
                Ok(due) => due,
                Err(err) => {
                    tracing::error!(error = %err, "cannot read the local queue");
                    Vec::new()
                }
            };
            for task in due {
                if self.claim(&task).await {
                    running.spawn(handle(self.sender.clone(), self.queue.clone(), self.in_flight.clone(), task));
                }
            }
            while running.try_join_next().is_some() {}
            if last_purge.elapsed() > Duration::from_secs(3600) {
                last_purge = std::time::Instant::now();
                self.purge_expired_logs().await;
            }
            let sleep = self.time_to_next_due().await;
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.queue.notified() => {}
                _ = shutdown.changed() => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        if !running.is_empty() {
            tracing::info!(in_flight = running.len(), "finishing deliveries in flight");
        }
        while running.join_next().await.is_some() {}
    }

    /// Marks a task as being handled: in memory against this loop's next poll, and in the store
    /// by moving its due time past the attempt, so the loop does not spin on it meanwhile and a
    /// crash leaves it due again soon after.
    async fn claim(&self, task: &PendingTask) -> bool {
        let fresh = self.in_flight.lock().map(|mut set| set.insert(task.task_id)).unwrap_or(false);
        if fresh {
            let due_at = Utc::now() + chrono::Duration::from_std(IN_FLIGHT_HOLD).unwrap_or_default();
            if let Err(err) = self.queue.store().put_task(&PendingTask { due_at, ..task.clone() }).await {
                tracing::warn!(error = %err, task_id = %task.task_id, "cannot hold the task while it runs");
            }
        }
        fresh
    }

    async fn time_to_next_due(&self) -> Duration {
        match self.queue.store().next_task_due().await {
            Ok(Some(due)) => (due - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(IDLE_POLL),
            _ => IDLE_POLL,
        }
    }

    async fn purge_expired_logs(&self) {
        match self.queue.store().purge_expired(Utc::now()).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired log entries removed"),
            Err(err) => tracing::warn!(error = %err, "cannot purge expired log entries"),
        }
    }
}

async fn handle(sender: Arc<Sender>, queue: LocalQueue, in_flight: Arc<Mutex<HashSet<Uuid>>>, task: PendingTask) {
    let outcome = sender.handle_message(&task.body, &task.task_id.to_string()).await;
    let store = queue.store();
    let later = || PendingTask {
        due_at: Utc::now()
            + chrono::Duration::from_std(REDELIVERY_DELAY.max(sender.claim_duration())).unwrap_or_default(),
        ..task.clone()
    };
    let result = match outcome {
        MessageOutcome::Done(_) => store.delete_task(task.task_id).await,
        MessageOutcome::Invalid(reason) => match sender.dead_letters().send(&task.body, &reason).await {
            Ok(()) => store.delete_task(task.task_id).await,
            Err(err) => {
                tracing::error!(error = %err, "cannot dead-letter an invalid message; keeping it");
                store.put_task(&later()).await
            }
        },
        MessageOutcome::TryAgainLater(_) | MessageOutcome::Held(_) => store.put_task(&later()).await,
    };
    if let Err(err) = result {
        tracing::error!(error = %err, task_id = %task.task_id, "cannot update the local queue");
    }
    if let Ok(mut set) = in_flight.lock() {
        set.remove(&task.task_id);
    }
}
