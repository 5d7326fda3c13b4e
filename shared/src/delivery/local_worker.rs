//! Local mode's sender loop: claims due messages from the store-backed queue and hands them to
//! the same [`Sender`] the Lambda runs. A message leaves the queue only once handled, so a
//! restart resumes pending deliveries and retries; handling is idempotent per (webhook, event).
//!
//! The worker claims only what it can start now: at most `DELIVERY_CONCURRENCY` messages are
//! in flight, and it asks the store for no more than the free slots. So memory stays flat
//! however large the backlog, and the backlog waits in the store, not in this process.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::{MessageOutcome, Received, Sender};
use crate::queue::LocalQueue;
use crate::store::{PendingTask, Store};

/// Longest sleep between polls, so messages queued by another process are noticed.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Shortest wait before a message whose handling failed for a passing reason is tried again;
/// longer if its claims on deliveries last longer ([`Sender::claim_duration`]).
const REDELIVERY_DELAY: Duration = Duration::from_secs(5);
/// How much longer than the sender's claim on a delivery a claimed task is held: the writes
/// around the attempt. After a crash, a held task is due again this soon, and by then the
/// claims its handling made on deliveries have run out, so it can make them again.
const HOLD_MARGIN: Duration = Duration::from_secs(5);
/// At shutdown, how long past the attempt timeout the worker waits for the writes that record
/// the attempts in flight.
const SHUTDOWN_WRITE_MARGIN: Duration = Duration::from_secs(2);

pub struct LocalWorker {
    sender: Arc<Sender>,
    queue: LocalQueue,
    store: Arc<dyn Store>,
    slots: usize,
    in_flight: Arc<Mutex<HashSet<Uuid>>>,
}

impl LocalWorker {
    /// A worker with at most `slots` messages in flight (`DELIVERY_CONCURRENCY`). `store` is
    /// where it purges expired log entries.
    pub fn new(sender: Arc<Sender>, queue: LocalQueue, store: Arc<dyn Store>, slots: usize) -> Self {
        Self { sender, queue, store, slots: slots.max(1), in_flight: Arc::default() }
    }

    /// How long a claimed task is held before it is due again, should its handling not finish.
    pub fn hold(&self) -> Duration {
        self.sender.claim_duration() + HOLD_MARGIN
    }

    /// Runs until `shutdown` turns true, then lets the messages in flight finish (each attempt
    /// is bounded by `DELIVERY_TIMEOUT_SECS`) and takes no new ones: those stay in the store
    /// for the next start.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut running = JoinSet::new();
        // At start as well as hourly: a server run for minutes at a time must still forget.
        self.purge_expired_logs().await;
        let mut last_purge = std::time::Instant::now();
        loop {
            if *shutdown.borrow() {
                break;
            }
            while running.try_join_next().is_some() {}
            let free = self.slots.saturating_sub(running.len());
            // Under load, slots are refilled a quarter at a time: one claim (a store round
            // trip and two thread wake-ups) per several finished messages, not one each.
            let hungry = free >= (self.slots / 4).max(1) || running.is_empty();
            if hungry {
                for task in self.claim(free).await {
                    running.spawn(handle(self.sender.clone(), self.queue.clone(), self.in_flight.clone(), task));
                }
            }
            if last_purge.elapsed() > Duration::from_secs(3600) {
                last_purge = std::time::Instant::now();
                self.purge_expired_logs().await;
            }
            let full = !hungry || running.len() >= self.slots;
            // With the slots (nearly) all taken only a finished message (or the stop) matters.
            let sleep = if full { IDLE_POLL } else { self.time_to_next_due().await };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.queue.notified(), if !full => {}
                _ = shutdown.changed() => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        if !running.is_empty() {
            tracing::info!(in_flight = running.len(), "finishing deliveries in flight");
        }
        // Attempts in flight get their timeout and the writes after it; a message with more to
        // send than that stays held in the store and resumes at the next start.
        let drain = self.sender.attempt_timeout() + SHUTDOWN_WRITE_MARGIN;
        let drained = tokio::time::timeout(drain, async { while running.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            // Their tasks are held in the store and come due again after the next start.
            tracing::warn!(
                in_flight = running.len(),
                "deliveries still in flight at exit; they resume at the next start"
            );
        }
    }

    /// Takes up to `free` due tasks, holding each in the store past its handling so the loop
    /// does not take it again meanwhile and a crash leaves it due again soon after.
    async fn claim(&self, free: usize) -> Vec<PendingTask> {
        let now = Utc::now();
        let hold_until = now + chrono::Duration::from_std(self.hold()).unwrap_or_default();
        let claimed = match self.queue.tasks().claim_due(now, free, hold_until).await {
            Ok(claimed) => claimed,
            Err(err) => {
                tracing::error!(error = %err, "cannot read the local queue");
                return Vec::new();
            }
        };
        let Ok(mut in_flight) = self.in_flight.lock() else {
            return Vec::new();
        };
        // A task still being handled whose hold ran out (a long fan-out) is left to its run;
        // the claim just extended its hold.
        claimed.into_iter().filter(|task| in_flight.insert(task.task_id)).collect()
    }

    async fn time_to_next_due(&self) -> Duration {
        match self.queue.tasks().next_due().await {
            Ok(Some(due)) => (due - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(IDLE_POLL),
            _ => IDLE_POLL,
        }
    }

    async fn purge_expired_logs(&self) {
        match self.store.purge_expired(Utc::now()).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired log entries removed"),
            Err(err) => tracing::warn!(error = %err, "cannot purge expired log entries"),
        }
    }
}

/// Takes a task off the in-flight set when its handling ends, however it ends: a handling that
/// panicked must leave its task to come due again, not mark it as being handled for good.
struct InFlight {
    set: Arc<Mutex<HashSet<Uuid>>>,
    task_id: Uuid,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.task_id);
        }
    }
}

async fn handle(sender: Arc<Sender>, queue: LocalQueue, in_flight: Arc<Mutex<HashSet<Uuid>>>, task: PendingTask) {
    let _in_flight = InFlight { set: in_flight, task_id: task.task_id };
    let message_id = task.task_id.to_string();
    let received =
        Received { body: &task.body, message_id: &message_id, receive_count: task.receive_count, sent_at: None };
    let outcome = sender.handle_received(received).await;
    let tasks = queue.tasks();
    let later =
        || Utc::now() + chrono::Duration::from_std(REDELIVERY_DELAY.max(sender.claim_duration())).unwrap_or_default();
    let result = match outcome {
        MessageOutcome::Done(_) => tasks.delete(task.task_id).await,
        MessageOutcome::Invalid(reason) => match sender.dead_letters().send(&task.body, &reason).await {
            Ok(()) => tasks.delete(task.task_id).await,
            Err(err) => {
                tracing::error!(error = %err, "cannot dead-letter an invalid message; keeping it");
                tasks.reschedule(task.task_id, later()).await
            }
        },
        MessageOutcome::TryAgainLater(_) | MessageOutcome::Held(_) => tasks.reschedule(task.task_id, later()).await,
    };
    if let Err(err) = result {
        // The task stays held in the store and comes due again when its hold runs out.
        tracing::error!(error = %err, task_id = %task.task_id, "cannot update the local queue");
    }
}
