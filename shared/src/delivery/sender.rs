//! The delivery engine: turns one queue message into deliveries. An event fans out to every
//! enabled subscriber; a task delivers to one webhook. Each (webhook, event) has one log entry,
//! and every state change is a conditional write on it, so a message that SQS redelivers or a
//! batch that Lambda retries never re-sends a delivery that already succeeded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use tokio::sync::{AcquireError, Semaphore, SemaphorePermit};
use tracing::Instrument;

use super::envelope::{USER_AGENT, signed_request};
use super::{AddressPolicy, AttemptOutcome, CidrList, DeliveryClient, DeliveryClientError, RetryPolicy};
use crate::config::Config;
use crate::domain::{Attempt, DeliveryLog, DeliveryState, EventEnvelope, Webhook, WebhookId, WebhookState};
use crate::events::{Incoming, parse_queue_body};
use crate::queue::{
    DeadLetters, DeliverReason, DeliverTask, MAX_QUEUE_DELAY, Queue, QueueError, QueueMessage, QueueTask,
};
use crate::store::{Store, StoreError};

/// Extra time a claim holds beyond the attempt's own timeout, for the writes around it.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// Time around each wave of attempts in a batch's budget: the log writes before and after.
const WAVE_OVERHEAD: Duration = Duration::from_secs(2);
/// Kept free at the end of an invocation to answer the batch and flush its logs.
const BATCH_RESERVE: Duration = Duration::from_secs(5);
/// How long past its next attempt an entry is kept, whatever the retention: long enough to
/// ride out a sender outage or a queue backlog.
const RETRY_KEEPS_ENTRY: Duration = Duration::from_secs(24 * 3600);
/// A retry that arrives this early is close enough to its time to go now.
const EARLY_ENOUGH: Duration = Duration::from_secs(1);
/// Attempts kept in a log entry; redeliveries can add attempts without end.
const MAX_LOGGED_ATTEMPTS: usize = 20;
/// Longest dead-letter reason: it travels as an SQS message attribute beside the body.
const MAX_REASON_CHARS: usize = 1024;
/// How often a webhook health update retries when a concurrent write won.
const HEALTH_UPDATE_ATTEMPTS: usize = 3;

/// A failure that says nothing about the message itself (store or queue unavailable): the
/// message must be processed again later.
#[derive(Debug, thiserror::Error)]
pub enum Transient {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
}

/// What handling one queue message came to.
#[derive(Debug)]
pub enum MessageOutcome {
    /// Fully handled: the message can be deleted.
    Done(Tally),
    /// The message can never be processed (invalid event): dead-letter it with this reason.
    Invalid(String),
    /// Handle the message again later; deliveries that went out are recorded and will not
    /// repeat.
    TryAgainLater(String),
}

/// Counts for the batch metrics line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub delivered: u32,
    pub failed: u32,
    pub retried: u32,
    pub exhausted: u32,
    pub skipped: u32,
    pub latencies_ms: Vec<u64>,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.retried += other.retried;
        self.exhausted += other.exhausted;
        self.skipped += other.skipped;
        self.latencies_ms.extend(&other.latencies_ms);
    }
}

/// What made us deliver: decides whether an existing log entry allows another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Fanout,
    Ping,
    Retry {
        attempt: u32,
    },
    /// `after` is the entry's attempt count when the operator asked; tasks queued before
    /// it existed carry none.
    Redeliver {
        after: Option<u32>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Delivered,
    Retrying,
    Exhausted,
    Skipped,
}

pub struct Sender {
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    dead_letters: Arc<dyn DeadLetters>,
    client: DeliveryClient,
    config: Arc<Config>,
    retry: RetryPolicy,
    in_flight: Semaphore,
}

impl Sender {
    /// `extra_allowed` widens the SSRF allow-list beyond `ALLOWED_TARGET_CIDRS` (local mode
    /// allows loopback).
    pub fn new(
        store: Arc<dyn Store>,
        queue: Arc<dyn Queue>,
        dead_letters: Arc<dyn DeadLetters>,
        config: Arc<Config>,
        extra_allowed: &CidrList,
    ) -> Result<Self, DeliveryClientError> {
        let mut allowed = config.allowed_target_cidrs.clone();
        allowed.extend(extra_allowed);
        let policy = if config.deny_public_targets {
            AddressPolicy::allow_list_only(allowed)
        } else {
            AddressPolicy::new(allowed)
        };
        let client = DeliveryClient::new(config.delivery_timeout, policy, USER_AGENT)?;
        Ok(Self {
            store,
            queue,
            dead_letters,
            client,
            retry: RetryPolicy::new(config.retry_schedule.clone()),
            in_flight: Semaphore::new(config.delivery_concurrency),
            config,
        })
    }

    pub fn dead_letters(&self) -> &Arc<dyn DeadLetters> {
        &self.dead_letters
    }

    /// Handles one queue message body. `message_id` is the queue's id for it.
    pub async fn handle_message(&self, body: &str, message_id: &str) -> MessageOutcome {
        self.handle_message_within(body, message_id, self.config.fanout_inline_limit).await
    }

    /// Inline deliveries each of `records` messages may make so that their batch ends within
    /// `time_left`. Attempts run in waves of `DELIVERY_CONCURRENCY`, each as long as one
    /// attempt's timeout; subscribers past the limit go to the queue as tasks, as they do past
    /// `FANOUT_INLINE_LIMIT`.
    pub fn inline_limit_within(&self, time_left: Duration, records: usize) -> usize {
        let wave = self.config.delivery_timeout + WAVE_OVERHEAD;
        let waves = time_left.saturating_sub(BATCH_RESERVE).as_millis() / wave.as_millis().max(1);
        let per_record = usize::try_from(waves).unwrap_or(usize::MAX).saturating_mul(self.config.delivery_concurrency)
            / records.max(1);
        if per_record == 0 {
            tracing::warn!(?time_left, records, "no wave of attempts fits in the time left; fan-outs go to the queue");
        }
        per_record.min(self.config.fanout_inline_limit)
    }

    /// [`Sender::handle_message`], delivering an event to at most `inline_limit` subscribers
    /// here and handing the rest to the queue.
    pub async fn handle_message_within(&self, body: &str, message_id: &str, inline_limit: usize) -> MessageOutcome {
        let incoming = match parse_queue_body(body, message_id, &self.config.ingest_defaults(), Utc::now()) {
            Ok(incoming) => incoming,
            Err(reason) => return MessageOutcome::Invalid(truncate(reason.0, MAX_REASON_CHARS)),
        };
        let result = match incoming {
            Incoming::Event(envelope) => {
                let span =
                    tracing::info_span!("fan_out", event_id = %envelope.event_id, event_type = %envelope.event_type);
                self.fan_out(&envelope, inline_limit).instrument(span).await
            }
            Incoming::Task(QueueTask::Deliver(task)) => {
                let span = tracing::info_span!("deliver_task", webhook_id = %task.webhook_id, event_id = %task.envelope.event_id);
                self.deliver_task(task).instrument(span).await
            }
        };
        match result {
            Ok(tally) => MessageOutcome::Done(tally),
            Err(err) => {
                tracing::warn!(error = %err, "message will be handled again later");
                MessageOutcome::TryAgainLater(err.to_string())
            }
        }
    }

    /// Delivers to the first `inline_limit` subscribers here and hands the rest to the queue as
    /// one task per webhook, so a batch fits in the sender's time limit however many subscribe.
    async fn fan_out(&self, envelope: &EventEnvelope, inline_limit: usize) -> Result<Tally, Transient> {
        let subscribers = self.store.subscribers(envelope.event_type).await?;
        let mut enabled: Vec<Webhook> = subscribers.into_iter().filter(Webhook::is_enabled).collect();
        let handed_off = enabled.split_off(enabled.len().min(inline_limit));
        if !handed_off.is_empty() {
            let tasks: Vec<QueueMessage> = handed_off
                .iter()
                .map(|webhook| {
                    let task = DeliverTask::new(webhook.webhook_id, DeliverReason::Fanout, envelope.clone());
                    QueueMessage::Task(QueueTask::Deliver(task))
                })
                .collect();
            self.queue.send_batch(&tasks, Duration::ZERO).await?;
            tracing::info!(handed_off = tasks.len(), "fan-out continues through the queue");
        }
        // One write creates every inline entry, already claimed, instead of one write each.
        let now = Utc::now();
        let fresh: Vec<DeliveryLog> =
            enabled.iter().map(|webhook| self.claimed_entry(webhook.webhook_id, envelope, now)).collect();
        if fresh.is_empty() {
            return Ok(Tally::default());
        }
        let inserted = self.store.insert_deliveries(&fresh).await?;
        if inserted.len() != fresh.len() {
            return Err(Transient::Store(StoreError::Backend(format!(
                "{} entries inserted, {} answers",
                fresh.len(),
                inserted.len()
            ))));
        }
        let mut tally = Tally::default();
        let results = join_all(
            enabled
                .iter()
                .zip(fresh)
                .zip(inserted)
                .map(|((webhook, entry), inserted)| self.deliver_inserted(webhook, entry, inserted)),
        )
        .await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok((step, latency)) => tally_step(&mut tally, step, latency),
                // Deliveries that did go out are recorded and will not repeat on the retry.
                Err(err) => first_error = first_error.or(Some(err)),
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(tally),
        }
    }

    async fn deliver_task(&self, task: DeliverTask) -> Result<Tally, Transient> {
        let mut tally = Tally::default();
        let Some(webhook) = self.store.get_webhook(task.webhook_id).await? else {
            tracing::info!("webhook no longer exists; dropping its delivery");
            tally.skipped += 1;
            return Ok(tally);
        };
        if !webhook.is_enabled() && task.reason != DeliverReason::Ping {
            tracing::info!(reason = ?webhook.disabled_reason, "webhook is disabled; its delivery fails");
            self.fail_pending(webhook.webhook_id, task.envelope.event_id).await?;
            tally.skipped += 1;
            return Ok(tally);
        }
        let trigger = match (task.reason, task.attempt) {
            (DeliverReason::Ping, _) => Trigger::Ping,
            (DeliverReason::Fanout, _) => Trigger::Fanout,
            (DeliverReason::Redeliver, _) => Trigger::Redeliver { after: task.after_try_count },
            // A retry without its attempt number cannot be matched to the log: it is stale.
            (DeliverReason::Retry, attempt) => Trigger::Retry { attempt: attempt.unwrap_or(0) },
        };
        let (step, latency) = self.deliver(&webhook, &task.envelope, trigger).await?;
        tally_step(&mut tally, step, latency);
        Ok(tally)
    }

    /// Ends a pending delivery to a disabled webhook as `failed`, so it does not sit in
    /// `retrying` forever; `recover` can send it once the webhook is enabled again.
    async fn fail_pending(&self, webhook_id: WebhookId, event_id: uuid::Uuid) -> Result<(), Transient> {
        let Some(mut entry) = self.store.get_delivery(webhook_id, event_id).await? else { return Ok(()) };
        if entry.state.is_final() {
            return Ok(());
        }
        entry.state = DeliveryState::Failed;
        entry.next_attempt_at = None;
        entry.lease_until = None;
        entry.updated_at = Utc::now();
        entry.version += 1;
        match self.store.update_delivery(&entry).await {
            Ok(()) | Err(StoreError::Conflict) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }

    /// One event to one webhook: find or create its log entry, decide whether an attempt is
    /// due, claim it, attempt, record. The concurrency permit is taken first, so the lease and
    /// the signature timestamp start when the attempt really does.
    async fn deliver(
        &self,
        webhook: &Webhook,
        envelope: &EventEnvelope,
        trigger: Trigger,
    ) -> Result<(Step, Option<u64>), Transient> {
        let permit = self.in_flight.acquire().await;
        let now = Utc::now();
        let Some((entry, claimed)) = self.entry_for(webhook.webhook_id, envelope, trigger, now).await? else {
            tracing::info!(event_id = %envelope.event_id, "no log entry for this retry; dropping it");
            return Ok((Step::Skipped, None));
        };
        self.deliver_entry(webhook, entry, claimed, trigger, now, permit).await
    }

    /// A fan-out delivery whose entry the fan-out already tried to insert, claimed. If the wait
    /// for a concurrency permit ate into the claim, it is renewed before the attempt.
    async fn deliver_inserted(
        &self,
        webhook: &Webhook,
        fresh: DeliveryLog,
        inserted: bool,
    ) -> Result<(Step, Option<u64>), Transient> {
        let permit = self.in_flight.acquire().await;
        let now = Utc::now();
        if !inserted {
            // It exists: SQS redelivered the message, or another sender got there first.
            let existing = self.store.get_delivery(fresh.webhook_id, fresh.event_id).await?;
            let entry = existing.ok_or(Transient::Store(StoreError::NotFound))?;
            return self.deliver_entry(webhook, entry, false, Trigger::Fanout, now, permit).await;
        }
        let mut entry = fresh;
        let attempt_needs = chrono_duration(self.config.delivery_timeout + LEASE_MARGIN / 2);
        if entry.lease_until.is_none_or(|lease| lease - now < attempt_needs) {
            entry.lease_until = Some(self.lease_from(now));
            entry.updated_at = now;
            entry.version += 1;
            match self.store.update_delivery(&entry).await {
                Ok(()) => {}
                Err(StoreError::Conflict) => return Ok((Step::Skipped, None)),
                Err(other) => return Err(other.into()),
            }
        }
        self.deliver_entry(webhook, entry, true, Trigger::Fanout, now, permit).await
    }

    /// The rest of a delivery once its entry is known: `claimed` says whether this sender
    /// already holds its lease. `permit` bounds requests in flight, so it is let go as soon as
    /// the attempt is answered, not after the write that records it.
    async fn deliver_entry(
        &self,
        webhook: &Webhook,
        mut entry: DeliveryLog,
        claimed: bool,
        trigger: Trigger,
        now: DateTime<Utc>,
        permit: Result<SemaphorePermit<'_>, AcquireError>,
    ) -> Result<(Step, Option<u64>), Transient> {
        if !claimed {
            let lease = self.lease_from(now);
            if !self.attempt_is_due(&mut entry, trigger, now).await? {
                return Ok((Step::Skipped, None));
            }
            entry.lease_until = Some(lease);
            entry.updated_at = now;
            entry.version += 1;
            match self.store.update_delivery(&entry).await {
                Ok(()) => {}
                Err(StoreError::Conflict) => {
                    tracing::debug!(webhook_id = %webhook.webhook_id, event_id = %entry.event_id, "claimed by another sender");
                    return Ok((Step::Skipped, None));
                }
                Err(other) => return Err(other.into()),
            }
        }

        // The stored payload, not the message's: a retry or redelivery sends what was accepted.
        let envelope = entry.envelope.clone();
        let attempt_number = entry.try_count + 1;
        let span = tracing::info_span!("attempt", webhook_id = %webhook.webhook_id, event_id = %envelope.event_id, attempt = attempt_number);
        let outcome = self.attempt(webhook, &envelope).instrument(span.clone()).await;
        drop(permit);
        let latency = (Utc::now() - envelope.created_at).num_milliseconds().max(0) as u64;
        let step = self.record(webhook, &envelope, entry, attempt_number, trigger, &outcome).instrument(span).await?;
        Ok((step, (step == Step::Delivered).then_some(latency)))
    }

    /// The log entry, and whether this call created it already claimed. A new event (fan-out,
    /// ping) is inserted first, holding the lease, which saves a read and a write per delivery.
    /// A retry or redelivery needs the entry it continues: `None` when it is gone.
    async fn entry_for(
        &self,
        webhook_id: WebhookId,
        envelope: &EventEnvelope,
        trigger: Trigger,
        now: DateTime<Utc>,
    ) -> Result<Option<(DeliveryLog, bool)>, Transient> {
        if !matches!(trigger, Trigger::Fanout | Trigger::Ping) {
            let existing = self.store.get_delivery(webhook_id, envelope.event_id).await?;
            return Ok(existing.map(|entry| (entry, false)));
        }
        let fresh = self.claimed_entry(webhook_id, envelope, now);
        if self.store.insert_delivery(&fresh).await? {
            return Ok(Some((fresh, true)));
        }
        // It exists: SQS redelivered the message, or another sender got there first.
        let existing = self.store.get_delivery(webhook_id, envelope.event_id).await?;
        existing.map(|entry| Some((entry, false))).ok_or(Transient::Store(StoreError::NotFound))
    }

    /// A new log entry for `envelope`, holding the lease from `now`.
    fn claimed_entry(&self, webhook_id: WebhookId, envelope: &EventEnvelope, now: DateTime<Utc>) -> DeliveryLog {
        let mut entry = DeliveryLog::new(webhook_id, envelope.clone(), now, self.config.log_retention);
        entry.lease_until = Some(self.lease_from(now));
        entry
    }

    /// How long a claim made at `now` holds: the attempt's own timeout and the writes around it.
    fn lease_from(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono_duration(self.claim_duration())
    }

    /// How long a delivery stays claimed by the handling that claimed it. A message whose
    /// handling must be tried again waits at least this long (SQS's visibility timeout does
    /// the same in AWS), or its own claims would make the next try skip those deliveries.
    pub fn claim_duration(&self) -> Duration {
        self.config.delivery_timeout + LEASE_MARGIN
    }

    /// Whether this message may make the next attempt on `entry`. Also re-sends a retry task
    /// that an earlier run failed to queue.
    async fn attempt_is_due(
        &self,
        entry: &mut DeliveryLog,
        trigger: Trigger,
        now: DateTime<Utc>,
    ) -> Result<bool, Transient> {
        if let Trigger::Redeliver { after: Some(after) } = trigger {
            // One more attempt after `after`: once there is one, this request (or another made
            // at the same point) is done. So a duplicated message sends once, in any order.
            if entry.try_count > after {
                tracing::debug!("this redelivery was already made");
                return Ok(false);
            }
            // Only the entry the operator saw: finished, or claimed by this request and left
            // unsent. A younger entry for the same event (the old one expired) or one in a
            // retry series keeps its own schedule.
            let claimed_unsent = entry.state == DeliveryState::Retrying && entry.next_attempt_at.is_none();
            if entry.try_count < after || !(entry.state.is_final() || claimed_unsent) {
                tracing::info!(state = entry.state.as_str(), "not the delivery this redelivery was asked for");
                return Ok(false);
            }
            if entry.lease_until.is_some_and(|lease| lease > now) {
                return Ok(false);
            }
            entry.state = DeliveryState::Retrying;
            entry.retry_scheduled = false;
            return Ok(true);
        }
        if entry.state.is_final() {
            if let Trigger::Redeliver { after: None } = trigger {
                entry.state = DeliveryState::Retrying;
                entry.retry_scheduled = false;
                return Ok(true);
            }
            tracing::debug!(state = entry.state.as_str(), "delivery already final");
            return Ok(false);
        }
        if entry.lease_until.is_some_and(|lease| lease > now) {
            return Ok(false);
        }
        let not_yet = entry.next_attempt_at.filter(|at| *at > now + chrono_duration(EARLY_ENOUGH));
        match trigger {
            Trigger::Redeliver { .. } => Ok(true),
            Trigger::Retry { attempt } if attempt != entry.try_count + 1 => {
                self.reschedule_if_lost(entry, now).await?;
                Ok(false)
            }
            Trigger::Retry { attempt } => match not_yet {
                // Waits past SQS's delay cap arrive early: hop through the queue again.
                Some(at) => {
                    let task = DeliverTask::retry(entry.webhook_id, attempt, entry.envelope.clone());
                    self.queue.send(&QueueMessage::Task(QueueTask::Deliver(task)), to_std(at - now)).await?;
                    Ok(false)
                }
                None => Ok(true),
            },
            Trigger::Fanout | Trigger::Ping => {
                if entry.try_count > 0 && not_yet.is_some() {
                    self.reschedule_if_lost(entry, now).await?;
                    return Ok(false);
                }
                Ok(entry.try_count == 0 || entry.state == DeliveryState::Queued || not_yet.is_none())
            }
        }
    }

    async fn reschedule_if_lost(&self, entry: &mut DeliveryLog, now: DateTime<Utc>) -> Result<(), Transient> {
        if entry.retry_scheduled || entry.state != DeliveryState::Retrying {
            return Ok(());
        }
        let wait = entry.next_attempt_at.map(|at| to_std(at - now)).unwrap_or_default();
        let task = DeliverTask::retry(entry.webhook_id, entry.try_count + 1, entry.envelope.clone());
        self.queue.send(&QueueMessage::Task(QueueTask::Deliver(task)), wait).await?;
        entry.retry_scheduled = true;
        entry.version += 1;
        match self.store.update_delivery(entry).await {
            Ok(()) | Err(StoreError::Conflict) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }

    async fn attempt(&self, webhook: &Webhook, envelope: &EventEnvelope) -> AttemptOutcome {
        let started = Instant::now();
        // A webhook stored before HTTPS_ONLY was turned on may still have a plain http URL.
        if self.config.https_only && webhook.url.as_str().starts_with("http:") {
            tracing::warn!("HTTPS_ONLY is on and the webhook URL is http; not sending");
            return AttemptOutcome {
                status: None,
                retry_after: None,
                response_head: None,
                duration: started.elapsed(),
                error: Some(super::DeliveryErrorKind::Blocked(
                    "HTTPS_ONLY is on and the webhook URL is http; update it to https".into(),
                )),
            };
        }
        let request = match signed_request(webhook, envelope, Utc::now()) {
            Ok(request) => request,
            Err(err) => {
                return AttemptOutcome {
                    status: None,
                    retry_after: None,
                    response_head: None,
                    duration: started.elapsed(),
                    error: Some(super::DeliveryErrorKind::Other(format!("cannot encode the body: {err}"))),
                };
            }
        };
        let outcome = self.client.post(webhook.url.as_str(), request.headers, request.body).await;
        match (&outcome.status, &outcome.error) {
            (Some(status), _) => {
                tracing::info!(status, duration_ms = outcome.duration.as_millis() as u64, "attempt answered")
            }
            (None, Some(error)) => {
                tracing::warn!(%error, duration_ms = outcome.duration.as_millis() as u64, "attempt failed")
            }
            (None, None) => {}
        }
        outcome
    }

    /// Writes the attempt and the new state. A retry is queued before the entry is written,
    /// so a crash in between repeats an attempt rather than losing one.
    async fn record(
        &self,
        webhook: &Webhook,
        envelope: &EventEnvelope,
        mut entry: DeliveryLog,
        attempt_number: u32,
        trigger: Trigger,
        outcome: &AttemptOutcome,
    ) -> Result<Step, Transient> {
        let now = Utc::now();
        entry.attempts.push(Attempt {
            attempt: attempt_number,
            at: now,
            status_code: outcome.status,
            error: outcome.error.as_ref().map(ToString::to_string),
            duration_ms: outcome.duration.as_millis() as u64,
            response_head: outcome.response_head.clone(),
        });
        if entry.attempts.len() > MAX_LOGGED_ATTEMPTS {
            // Keep the item small (DynamoDB's 400 KB limit): the first attempt and the latest.
            entry.attempts.drain(1..entry.attempts.len() - MAX_LOGGED_ATTEMPTS + 1);
        }
        entry.try_count = attempt_number;
        entry.lease_until = None;
        entry.updated_at = now;
        entry.retry_scheduled = false;
        let gone = outcome.status == Some(410);
        let honour_retry_after = matches!(outcome.status, Some(429 | 503));
        let mut queue_error = None;
        let step = if outcome.succeeded() {
            entry.state = DeliveryState::Succeeded;
            entry.next_attempt_at = None;
            Step::Delivered
        } else if let Some(delay) = (!gone && !matches!(trigger, Trigger::Redeliver { .. }))
            .then(|| self.retry.delay_after(attempt_number, outcome.retry_after.filter(|_| honour_retry_after)))
            .flatten()
        {
            entry.state = DeliveryState::Retrying;
            let next_attempt_at = now + chrono_duration(delay);
            entry.next_attempt_at = Some(next_attempt_at);
            // The retry continues from this entry: it must outlive the wait, however long a
            // Retry-After made it.
            entry.expires_at = entry.expires_at.max((next_attempt_at + chrono_duration(RETRY_KEEPS_ENTRY)).timestamp());
            let task = DeliverTask::retry(entry.webhook_id, attempt_number + 1, envelope.clone());
            match self.queue.send(&QueueMessage::Task(QueueTask::Deliver(task)), delay.min(MAX_QUEUE_DELAY)).await {
                Ok(()) => entry.retry_scheduled = true,
                Err(err) => queue_error = Some(err),
            }
            Step::Retrying
        } else {
            entry.state = DeliveryState::Failed;
            entry.next_attempt_at = None;
            Step::Exhausted
        };
        entry.version += 1;
        match self.store.update_delivery(&entry).await {
            Ok(()) => {}
            Err(StoreError::Conflict) => {
                tracing::warn!(status = ?outcome.status, "the lease ran out before this attempt was recorded");
            }
            Err(other) => return Err(other.into()),
        }
        tracing::info!(state = entry.state.as_str(), try_count = entry.try_count, "delivery recorded");
        // A success on a healthy webhook changes nothing: skip the read.
        if !(outcome.succeeded() && webhook.failing_since.is_none()) {
            self.update_health(webhook.webhook_id, outcome.succeeded(), gone, now).await;
        }
        match queue_error {
            Some(err) => Err(err.into()),
            None => Ok(step),
        }
    }

    /// Tracks how long a webhook has been failing and disables it after `410 Gone` or when
    /// every delivery failed for `auto_disable_after`. Best effort: a failure here is logged,
    /// never allowed to affect the delivery.
    async fn update_health(&self, webhook_id: WebhookId, succeeded: bool, gone: bool, now: DateTime<Utc>) {
        for _ in 0..HEALTH_UPDATE_ATTEMPTS {
            let mut webhook = match self.store.get_webhook(webhook_id).await {
                Ok(Some(webhook)) => webhook,
                Ok(None) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read webhook health");
                    return;
                }
            };
            let failing_since = webhook.failing_since;
            let change = match (succeeded, failing_since) {
                (true, None) => None,
                (true, Some(_)) => Some((None, None)),
                (false, _) if gone => {
                    Some((failing_since.or(Some(now)), Some("the endpoint answered 410 Gone".to_owned())))
                }
                (false, None) => Some((Some(now), None)),
                (false, Some(since)) if now - since >= self.config.auto_disable_after => {
                    Some((Some(since), Some(format!("every delivery failed since {}", since.to_rfc3339()))))
                }
                (false, Some(_)) => None,
            };
            let Some((new_failing_since, disable_reason)) = change else { return };
            if webhook.state == WebhookState::Disabled && disable_reason.is_some() {
                return;
            }
            webhook.failing_since = new_failing_since;
            if let Some(reason) = disable_reason {
                tracing::warn!(webhook_id = %webhook_id, %reason, "disabling webhook");
                webhook.state = WebhookState::Disabled;
                webhook.disabled_reason = Some(reason);
            }
            webhook.version += 1;
            match self.store.update_webhook(&webhook).await {
                Ok(()) | Err(StoreError::NotFound) => return,
                Err(StoreError::Conflict) => continue,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot update webhook health");
                    return;
                }
            }
        }
    }
}

fn tally_step(tally: &mut Tally, step: Step, latency: Option<u64>) {
    match step {
        Step::Delivered => tally.delivered += 1,
        Step::Retrying => {
            tally.failed += 1;
            tally.retried += 1;
        }
        Step::Exhausted => {
            tally.failed += 1;
            tally.exhausted += 1;
        }
        Step::Skipped => tally.skipped += 1,
    }
    tally.latencies_ms.extend(latency);
}

fn truncate(mut text: String, max_chars: usize) -> String {
    if let Some((cut, _)) = text.char_indices().nth(max_chars) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

fn to_std(duration: chrono::Duration) -> Duration {
    duration.to_std().unwrap_or_default()
}
