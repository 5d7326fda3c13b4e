//! The delivery engine: turns queue messages into deliveries. An event fans out to every
//! enabled subscriber; a task delivers to one webhook. Each (webhook, event) has one log entry
//! whose rules live in [`DeliveryLog`]'s transitions; here the sender reads the entry, asks it
//! what to do, writes what it answers and sends.
//!
//! A message received for the first time (`receive_count == 1`) cannot have been handled
//! before, so its deliveries skip the read and the claim: each is attempted and then written
//! once, with a condition that its entry does not exist yet. A message received again may have
//! been (partly) handled: its entries are read first, and each attempt is claimed before it is
//! made, so a delivery that succeeded is never sent again, and one claimed by another sender
//! makes the message come back later instead of being dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use tokio::sync::{AcquireError, Semaphore, SemaphorePermit};
use tracing::Instrument;

use super::envelope::{USER_AGENT, signed_request};
use super::health::{self, HealthLedger, HealthNote, HealthStep, RunVerdict};
use super::{AddressPolicy, AttemptOutcome, CidrList, DeliveryClient, DeliveryClientError, RetryPolicy};
use crate::config::Config;
use crate::domain::{
    Attempt, Decision, DeliveryLog, EventEnvelope, Gcra, Outcome, Recorded, Trigger, Webhook, WebhookState, wait_for,
};
use crate::events::operational::{self, DisabledReason};
use crate::queue::{
    DeadLetters, DeliverTask, MAX_QUEUE_DELAY, Queue, QueueError, QueueMessage, QueueTask, parse_queue_body,
};
use crate::store::{DeliveryKey, Read, Store, StoreError};

/// Extra time a claim holds beyond the attempt's own timeout, for the writes around it.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// Time around each wave of attempts in a batch's budget: the log writes before and after.
const WAVE_OVERHEAD: Duration = Duration::from_secs(2);
/// Kept free at the end of an invocation to answer the batch and flush its logs.
const BATCH_RESERVE: Duration = Duration::from_secs(5);
/// Longest dead-letter reason: it travels as an SQS message attribute beside the body.
const MAX_REASON_CHARS: usize = 1024;
/// How often disabling a webhook retries when a concurrent write won.
const DISABLE_ATTEMPTS: usize = 3;
/// Longest a delivery waits in the process for its webhook's rate limit; a longer wait goes
/// through the queue, so a backlog for a slow webhook holds no concurrency slot.
const RATE_WAIT_INLINE: Duration = Duration::from_secs(2);
/// How far ahead a slot is reserved: past the reservation's own round trip to the store, so
/// the attempt starts at its slot rather than that much after it, crowding the next one.
const RATE_LEAD: chrono::Duration = chrono::Duration::milliseconds(250);
/// How early a delivery waiting on the queue for its slot comes back (SQS rounds a delay up
/// to whole seconds), to sleep the rest in the process and start on time.
const RATE_EARLY: Duration = Duration::from_millis(1500);
/// A delivery back from the queue later than this past its slot takes a new one: starting
/// late could crowd the next slot's start into the same second.
const RATE_LATE_TOLERANCE: chrono::Duration = chrono::Duration::milliseconds(10);

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
    /// Another sender holds a live claim on one of its deliveries: handle the message again
    /// once the claim has run out (a sender that died holding it never comes back for it).
    Held(String),
}

/// Counts for the batch metrics line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub delivered: u32,
    pub failed: u32,
    pub retried: u32,
    pub exhausted: u32,
    pub skipped: u32,
    pub held: u32,
    pub latencies_ms: Vec<u64>,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.retried += other.retried;
        self.exhausted += other.exhausted;
        self.skipped += other.skipped;
        self.held += other.held;
        self.latencies_ms.extend(&other.latencies_ms);
    }

    fn count(&mut self, step: Step) {
        match step {
            Step::Recorded(Recorded::Delivered, latency) => {
                self.delivered += 1;
                self.latencies_ms.push(latency);
            }
            Step::Recorded(Recorded::Retrying { .. }, _) => {
                self.failed += 1;
                self.retried += 1;
            }
            Step::Recorded(Recorded::Failed { .. }, _) => {
                self.failed += 1;
                self.exhausted += 1;
            }
            Step::Skipped => self.skipped += 1,
            Step::Held => self.held += 1,
        }
    }
}

/// One message as the queue handed it over.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub body: &'a str,
    /// The queue's id for the message.
    pub message_id: &'a str,
    /// How many times the queue has handed it out, this time included (SQS's
    /// `ApproximateReceiveCount`); 0 when unknown, which counts as "maybe handled before".
    pub receive_count: u32,
    /// When the queue accepted it (SQS's `SentTimestamp`): the creation time of an event that
    /// names none, the same on every receive.
    pub sent_at: Option<DateTime<Utc>>,
}

impl Received<'_> {
    fn first_time(&self) -> bool {
        self.receive_count == 1
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// An attempt was made and recorded; the latency (event created → delivered) in ms.
    Recorded(Recorded, u64),
    Skipped,
    Held,
}

/// What the sender knows of a delivery's entry before it attempts.
enum Prior {
    /// Not read: the message is new, so no entry can exist.
    Unread,
    /// Read, and there is none.
    Absent,
    /// Read: this entry, at the freshness `Read` says.
    Found(DeliveryLog, Read),
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

    /// Handles one queue message body whose history is unknown (it may have been handled
    /// before). `message_id` is the queue's id for it.
    pub async fn handle_message(&self, body: &str, message_id: &str) -> MessageOutcome {
        self.handle_received(Received { body, message_id, receive_count: 0, sent_at: None }).await
    }

    /// Handles one message on its own, as the local queue hands them out.
    pub async fn handle_received(&self, received: Received<'_>) -> MessageOutcome {
        self.handle_batch(&[received], self.config.fanout_inline_limit)
            .await
            .pop()
            .unwrap_or_else(|| MessageOutcome::TryAgainLater("the message was not handled".into()))
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

    /// Handles a batch of messages, delivering each event to at most `inline_limit`
    /// subscribers here (the rest go to the queue), then applies what the batch learnt about
    /// each webhook's health in one write per webhook at most.
    pub async fn handle_batch(&self, messages: &[Received<'_>], inline_limit: usize) -> Vec<MessageOutcome> {
        let ledger = HealthLedger::default();
        let outcomes = join_all(messages.iter().map(|message| self.handle_one(message, inline_limit, &ledger))).await;
        self.settle_health(&ledger).await;
        outcomes
    }

    async fn handle_one(&self, message: &Received<'_>, inline_limit: usize, ledger: &HealthLedger) -> MessageOutcome {
        let now = message.sent_at.unwrap_or_else(Utc::now);
        let incoming = match parse_queue_body(message.body, message.message_id, &self.config.ingest_defaults(), now) {
            Ok(incoming) => incoming,
            Err(reason) => return MessageOutcome::Invalid(truncate(reason.0, MAX_REASON_CHARS)),
        };
        let result = match incoming {
            QueueMessage::Event(envelope) => {
                let span =
                    tracing::info_span!("fan_out", event_id = %envelope.event_id, event_type = %envelope.event_type);
                self.fan_out(&envelope, inline_limit, message.first_time(), ledger).instrument(span).await
            }
            QueueMessage::Task(QueueTask::Deliver(task)) => {
                let span = tracing::info_span!("deliver_task", webhook_id = %task.webhook_id, event_id = %task.envelope.event_id);
                self.deliver_task(task, message.first_time(), ledger).instrument(span).await
            }
        };
        match result {
            Ok(tally) if tally.held > 0 => {
                tracing::info!(held = tally.held, "deliveries claimed by another sender; the message comes back later");
                MessageOutcome::Held(format!("{} deliveries are claimed by another sender", tally.held))
            }
            Ok(tally) => MessageOutcome::Done(tally),
            Err(err) => {
                tracing::warn!(error = %err, "message will be handled again later");
                MessageOutcome::TryAgainLater(err.to_string())
            }
        }
    }

    /// Delivers to the first `inline_limit` subscribers here and hands the rest to the queue as
    /// one task per webhook, so a batch fits in the sender's time limit however many subscribe.
    async fn fan_out(
        &self,
        envelope: &EventEnvelope,
        inline_limit: usize,
        first_time: bool,
        ledger: &HealthLedger,
    ) -> Result<Tally, Transient> {
        let subscribers = self.store.subscribers(envelope.event_type).await?;
        let mut enabled: Vec<Webhook> = subscribers.into_iter().filter(Webhook::is_enabled).collect();
        let handed_off = enabled.split_off(enabled.len().min(inline_limit));
        if !handed_off.is_empty() {
            let tasks: Vec<QueueMessage> = handed_off
                .iter()
                .map(|webhook| {
                    QueueMessage::Task(QueueTask::Deliver(DeliverTask::fanout(webhook.webhook_id, envelope.clone())))
                })
                .collect();
            self.queue.send_batch(&tasks, Duration::ZERO).await?;
            tracing::info!(handed_off = tasks.len(), "fan-out continues through the queue");
        }
        if enabled.is_empty() {
            return Ok(Tally::default());
        }
        let priors: Vec<Prior> = if first_time {
            enabled.iter().map(|_| Prior::Unread).collect()
        } else {
            let keys: Vec<DeliveryKey> = enabled.iter().map(|w| DeliveryKey::of(w.webhook_id, envelope)).collect();
            let found = self.store.load_deliveries(&keys).await?;
            found.into_iter().map(|entry| entry.map_or(Prior::Absent, |e| Prior::Found(e, Read::Latest))).collect()
        };
        let results = join_all(
            enabled
                .iter()
                .zip(priors)
                .map(|(webhook, prior)| self.deliver(webhook, envelope, Trigger::Fanout, prior, None, ledger)),
        )
        .await;
        let mut tally = Tally::default();
        let mut first_error = None;
        for result in results {
            match result {
                Ok(step) => tally.count(step),
                // Deliveries that did go out are recorded and will not repeat on the retry.
                Err(err) => first_error = first_error.or(Some(err)),
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(tally),
        }
    }

    async fn deliver_task(
        &self,
        task: DeliverTask,
        first_time: bool,
        ledger: &HealthLedger,
    ) -> Result<Tally, Transient> {
        let mut tally = Tally::default();
        let Some(webhook) = self.store.webhook_for_delivery(task.webhook_id).await? else {
            tracing::info!("webhook no longer exists; dropping its delivery");
            tally.skipped += 1;
            return Ok(tally);
        };
        let key = DeliveryKey::of(task.webhook_id, &task.envelope);
        if !webhook.is_enabled() && task.trigger != Trigger::Ping {
            tracing::info!(reason = ?webhook.disabled_reason, "webhook is disabled; its delivery fails");
            self.fail_pending(&key).await?;
            tally.skipped += 1;
            return Ok(tally);
        }
        let prior = match task.trigger {
            // A ping task is new each time it is sent; a fan-out's hand-off may be sent again
            // when its event is, so it always reads first.
            Trigger::Ping if first_time => Prior::Unread,
            Trigger::Ping | Trigger::Fanout => match self.store.load_delivery(&key, Read::Latest).await? {
                Some(entry) => Prior::Found(entry, Read::Latest),
                None => Prior::Absent,
            },
            // A stale read is caught by the claim's condition, and read again then.
            Trigger::Retry { .. } | Trigger::Redeliver { .. } => {
                match self.store.load_delivery(&key, Read::MaybeStale).await? {
                    Some(entry) => Prior::Found(entry, Read::MaybeStale),
                    None => {
                        tracing::info!("no log entry for this delivery; dropping it");
                        tally.skipped += 1;
                        return Ok(tally);
                    }
                }
            }
        };
        tally.count(self.deliver(&webhook, &task.envelope, task.trigger, prior, task.rate_slot, ledger).await?);
        Ok(tally)
    }

    /// Ends a pending delivery to a disabled webhook as `failed`.
    async fn fail_pending(&self, key: &DeliveryKey) -> Result<(), Transient> {
        let Some(mut entry) = self.store.load_delivery(key, Read::Latest).await? else { return Ok(()) };
        if !entry.fail_pending(Utc::now()) {
            return Ok(());
        }
        match self.store.update_delivery(&entry).await {
            Ok(()) | Err(StoreError::Conflict) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }

    /// One event to one webhook. The concurrency permit is taken first, so a claim and the
    /// signature timestamp start when the attempt really does, and a large fan-out waits as
    /// futures, not as requests.
    async fn deliver(
        &self,
        webhook: &Webhook,
        envelope: &EventEnvelope,
        trigger: Trigger,
        prior: Prior,
        rate_slot: Option<DateTime<Utc>>,
        ledger: &HealthLedger,
    ) -> Result<Step, Transient> {
        // Only an attempt waits for the rate limit: a delivery with nothing to do goes by.
        let attempts = match &prior {
            Prior::Unread | Prior::Absent => true,
            Prior::Found(entry, _) => entry.decide(trigger, Utc::now()) == Decision::Attempt,
        };
        if attempts && !self.wait_for_rate_limit(webhook, envelope, trigger, rate_slot).await? {
            return Ok(Step::Skipped);
        }
        let permit = self.in_flight.acquire().await;
        let now = Utc::now();
        let (mut entry, read) = match prior {
            Prior::Unread => {
                let entry = DeliveryLog::new(webhook.webhook_id, envelope.clone(), now, self.config.log_retention);
                return self.attempt_and_record(webhook, entry, trigger, false, permit, ledger).await;
            }
            Prior::Absent => {
                let mut entry = DeliveryLog::new(webhook.webhook_id, envelope.clone(), now, self.config.log_retention);
                entry.claim(trigger, self.lease_from(now), now);
                if self.store.insert_delivery(&entry).await? {
                    return self.attempt_and_record(webhook, entry, trigger, true, permit, ledger).await;
                }
                // Another sender created it meanwhile: its state decides.
                match self.store.load_delivery(&entry.key(), Read::Latest).await? {
                    Some(existing) => (existing, Read::Latest),
                    None => return Err(StoreError::NotFound.into()),
                }
            }
            Prior::Found(entry, read) => (entry, read),
        };
        let mut read_again = read == Read::MaybeStale;
        loop {
            match entry.decide(trigger, now) {
                Decision::Attempt => {
                    entry.claim(trigger, self.lease_from(now), now);
                    match self.store.update_delivery(&entry).await {
                        Ok(()) => return self.attempt_and_record(webhook, entry, trigger, true, permit, ledger).await,
                        Err(StoreError::Conflict) if read_again => {
                            read_again = false;
                            match self.store.load_delivery(&entry.key(), Read::Latest).await? {
                                Some(latest) => entry = latest,
                                None => return Ok(Step::Skipped),
                            }
                        }
                        Err(StoreError::Conflict) => {
                            tracing::debug!("claimed by another sender");
                            return Ok(Step::Skipped);
                        }
                        Err(other) => return Err(other.into()),
                    }
                }
                Decision::Skip(why) => {
                    tracing::debug!(why, "no attempt");
                    return Ok(Step::Skipped);
                }
                Decision::Held { until } => {
                    tracing::info!(%until, "the delivery is claimed by another sender");
                    return Ok(Step::Held);
                }
                Decision::NotYet { attempt, at } => {
                    // Waits past the queue's delay cap arrive early: hop through it again.
                    self.queue_retry(&entry, attempt, at - now).await?;
                    return Ok(Step::Skipped);
                }
                Decision::QueueLostRetry { attempt, at } => {
                    self.queue_retry(&entry, attempt, at - now).await?;
                    entry.requeued(now);
                    return match self.store.update_delivery(&entry).await {
                        Ok(()) | Err(StoreError::Conflict) => Ok(Step::Skipped),
                        Err(other) => Err(other.into()),
                    };
                }
            }
        }
    }

    /// Waits until the webhook's rate limit lets an attempt start (SPEC §9.3). The delivery
    /// reserves a slot of its own (or keeps the one it reserved before it went to the queue);
    /// a slot within a short wait is slept for in the process, a later one hands the delivery
    /// to the queue, delayed until just before its slot, and answers `false`. Waiting is
    /// neither an attempt nor a failure. Webhooks without a limit pay nothing.
    async fn wait_for_rate_limit(
        &self,
        webhook: &Webhook,
        envelope: &EventEnvelope,
        trigger: Trigger,
        reserved: Option<DateTime<Utc>>,
    ) -> Result<bool, Transient> {
        let Some(limit) = rate_limit_of(webhook) else { return Ok(true) };
        let slot = match reserved {
            Some(slot) if Utc::now() - slot <= RATE_LATE_TOLERANCE => slot,
            _ => self.store.reserve_rate_slot(webhook.webhook_id, limit, Utc::now() + RATE_LEAD).await?,
        };
        let wait = wait_for(slot, Utc::now());
        if wait <= RATE_WAIT_INLINE {
            tokio::time::sleep(wait).await;
            return Ok(true);
        }
        let task = DeliverTask::waiting_for(webhook.webhook_id, trigger, envelope.clone(), slot);
        let delay = wait.saturating_sub(RATE_EARLY).min(MAX_QUEUE_DELAY);
        self.queue.send(&QueueMessage::Task(QueueTask::Deliver(task)), delay).await?;
        tracing::debug!(wait_ms = wait.as_millis() as u64, "rate limited; the delivery waits on the queue");
        Ok(false)
    }

    async fn queue_retry(&self, entry: &DeliveryLog, attempt: u32, wait: chrono::Duration) -> Result<(), QueueError> {
        let task = DeliverTask::retry(entry.webhook_id, attempt, entry.envelope.clone());
        self.queue.send(&QueueMessage::Task(QueueTask::Deliver(task)), to_std(wait).min(MAX_QUEUE_DELAY)).await
    }

    /// Makes the attempt and writes its outcome: over the stored entry when `stored`, else as
    /// a new entry (the one write of a new message's delivery). `permit` bounds requests in
    /// flight, so it is let go as soon as the attempt is answered, not after the write. A retry
    /// is queued before the entry is written, so a crash in between repeats an attempt rather
    /// than losing one.
    async fn attempt_and_record(
        &self,
        webhook: &Webhook,
        entry: DeliveryLog,
        trigger: Trigger,
        stored: bool,
        permit: Result<SemaphorePermit<'_>, AcquireError>,
        ledger: &HealthLedger,
    ) -> Result<Step, Transient> {
        // The stored payload, not the message's: a retry or redelivery sends what was accepted.
        let number = entry.try_count + 1;
        let span = tracing::info_span!("attempt", webhook_id = %webhook.webhook_id, event_id = %entry.event_id, attempt = number);
        let outcome = self.attempt(webhook, &entry.envelope).instrument(span.clone()).await;
        drop(permit);
        // The span is entered only around polls (`instrument`): a guard held across an await
        // would enter and leave it on different threads.
        self.record_attempt(webhook, entry, trigger, stored, outcome, ledger).instrument(span).await
    }

    /// Writes an attempt's outcome (see [`Self::attempt_and_record`]).
    async fn record_attempt(
        &self,
        webhook: &Webhook,
        mut entry: DeliveryLog,
        trigger: Trigger,
        stored: bool,
        outcome: AttemptOutcome,
        ledger: &HealthLedger,
    ) -> Result<Step, Transient> {
        let number = entry.try_count + 1;
        let now = Utc::now();
        let asks_to_wait = matches!(outcome.status, Some(429 | 503));
        let result = Outcome {
            attempt: Attempt {
                attempt: number,
                at: now,
                status_code: outcome.status,
                error: outcome.error.as_ref().map(ToString::to_string),
                duration_ms: outcome.duration.as_millis() as u64,
                response_head: match (&outcome.response_head, &webhook.headers) {
                    (Some(head), Some(headers)) => Some(headers.redact(head)),
                    (head, _) => head.clone(),
                },
            },
            succeeded: outcome.succeeded(),
            retry_after: outcome.retry_after.filter(|_| asks_to_wait),
        };
        let recorded = entry.record(result, trigger, &self.retry, now);
        let mut queue_error = None;
        if let Recorded::Retrying { attempt, delay, .. } = recorded {
            let task = DeliverTask::retry(entry.webhook_id, attempt, entry.envelope.clone());
            match self.queue.send(&QueueMessage::Task(QueueTask::Deliver(task)), delay.min(MAX_QUEUE_DELAY)).await {
                Ok(()) => entry.retry_queued(),
                Err(err) => queue_error = Some(err),
            }
        }
        // Raised before the entry is written, as a retry is queued: a crash in between repeats
        // it rather than losing it. A failed delivery of an operational event raises nothing.
        let exhausted = matches!(recorded, Recorded::Failed { .. }) && !matches!(trigger, Trigger::Redeliver { .. });
        if exhausted && !entry.event_type.is_operational() {
            let last = entry.attempts.last();
            let event = operational::delivery_failed_event(
                entry.webhook_id,
                entry.event_id,
                entry.event_type,
                entry.try_count,
                (last.and_then(|a| a.status_code), last.and_then(|a| a.error.as_deref())),
                (self.config.instance_id, &self.config.instance_name),
                now,
            );
            if let Err(err) = self.queue.send(&QueueMessage::Event(event), Duration::ZERO).await {
                queue_error = queue_error.or(Some(err));
            }
        }
        let written = if stored {
            self.store.update_delivery(&entry).await.map(|()| true)
        } else {
            self.store.insert_delivery(&entry).await
        };
        match written {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                status = ?outcome.status,
                "the entry existed already (the event was published again under its id); this attempt was extra"
            ),
            Err(StoreError::Conflict) => {
                tracing::warn!(status = ?outcome.status, "the claim ran out before this attempt was recorded")
            }
            Err(other) => return Err(other.into()),
        }
        tracing::debug!(state = entry.state.as_str(), try_count = entry.try_count, "delivery recorded");
        ledger.note(webhook, entry.event_type, recorded);
        if let Some(err) = queue_error {
            return Err(err.into());
        }
        let latency = (now - entry.envelope.created_at).num_milliseconds().max(0) as u64;
        Ok(Step::Recorded(recorded, latency))
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
        let duration_ms = outcome.duration.as_millis() as u64;
        // Successes are counted by the batch's metrics line; a line each would be most of the
        // log bill.
        match (&outcome.status, &outcome.error) {
            (Some(status), _) if outcome.succeeded() => tracing::debug!(status, duration_ms, "attempt answered"),
            (Some(status), _) => tracing::warn!(status, duration_ms, "attempt answered"),
            (None, Some(error)) => tracing::warn!(%error, duration_ms, "attempt failed"),
            (None, None) => {}
        }
        outcome
    }

    /// How long a claim made at `now` holds: the attempt's own timeout and the writes around it.
    fn lease_from(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono_duration(self.claim_duration())
    }

    /// How long a delivery stays claimed by the handling that claimed it. A message whose
    /// handling must be tried again waits at least this long (SQS's visibility timeout does
    /// the same in AWS), or its own claims would hold the next try back.
    /// How long one attempt may take, connect to response head (`DELIVERY_TIMEOUT_SECS`).
    pub fn attempt_timeout(&self) -> Duration {
        self.config.delivery_timeout
    }

    pub fn claim_duration(&self) -> Duration {
        self.config.delivery_timeout + LEASE_MARGIN
    }

    /// Applies a batch's outcomes to each webhook's health. Best effort: a failure here is
    /// logged, never allowed to affect the deliveries.
    async fn settle_health(&self, ledger: &HealthLedger) {
        let now = Utc::now();
        for note in ledger.take() {
            let id = note.webhook.webhook_id;
            let settled = match health::step_for(&note) {
                HealthStep::Nothing => Ok(()),
                HealthStep::DisableGone => self.disable(&note, DisabledReason::Gone, None, now).await,
                HealthStep::NoteFailures => self.note_failures(&note, now).await,
            };
            if let Err(err) = settled {
                tracing::warn!(webhook_id = %id, error = %err, "cannot update webhook health");
            }
        }
    }

    async fn note_failures(&self, note: &HealthNote, now: DateTime<Utc>) -> Result<(), StoreError> {
        let id = note.webhook.webhook_id;
        let since = self.store.note_failure(id, now).await?;
        if health::judge_run(since, now, self.config.auto_disable_after) == RunVerdict::TooShort {
            return Ok(());
        }
        if self.store.succeeded_since(id, since).await? {
            // The run was broken by a success the log knows of: it starts again now.
            return self.store.restart_failures(id, now).await;
        }
        self.disable(note, DisabledReason::Failing, Some(since), now).await
    }

    /// Disables the webhook and raises `webhook_disabled`, unless only operational events were
    /// failing (no cascade).
    async fn disable(
        &self,
        note: &HealthNote,
        why: DisabledReason,
        failing_since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id = note.webhook.webhook_id;
        let reason = match (why, failing_since) {
            (DisabledReason::Failing, Some(since)) => health::failing_reason(since),
            _ => health::gone_reason(),
        };
        for _ in 0..DISABLE_ATTEMPTS {
            let Some(mut webhook) = self.store.get_webhook(id).await? else { return Ok(()) };
            if webhook.state == WebhookState::Disabled {
                return Ok(());
            }
            webhook.disable(reason.clone(), now);
            match self.store.update_webhook(&webhook).await {
                Ok(()) => {
                    tracing::warn!(webhook_id = %id, %reason, "webhook disabled");
                    if note.failed_onefuzz_event {
                        let event = operational::webhook_disabled_event(
                            id,
                            &webhook.name,
                            why,
                            failing_since,
                            (self.config.instance_id, &self.config.instance_name),
                            now,
                        );
                        if let Err(err) = self.queue.send(&QueueMessage::Event(event), Duration::ZERO).await {
                            tracing::error!(webhook_id = %id, error = %err, "cannot raise webhook_disabled");
                        }
                    }
                    return Ok(());
                }
                Err(StoreError::NotFound) => return Ok(()),
                Err(StoreError::Conflict) => continue,
                Err(err) => return Err(err),
            }
        }
        Err(StoreError::Conflict)
    }
}

/// The webhook's rate limit, if it has one.
fn rate_limit_of(webhook: &Webhook) -> Option<Gcra> {
    webhook.rate_limit_per_second.map(|limit| Gcra::of(limit.per_second()))
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
