//! Webhook health: how a batch's outcomes become at most one health write per webhook. A
//! success writes nothing (the happy path stays one write per delivery); failures note the
//! start of a run of failures; a webhook is disabled after `410 Gone`, or when every delivery
//! failed for `AUTO_DISABLE_AFTER_SECS` (checked against the log, since successes are not
//! noted anywhere else).

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::domain::{Recorded, Webhook, WebhookId};
use crate::events::EventType;

/// What one webhook's deliveries did within one batch.
#[derive(Debug, Clone)]
pub struct HealthNote {
    pub webhook: Webhook,
    pub failed: bool,
    pub succeeded: bool,
    pub gone: bool,
    /// Whether a delivery of a OneFuzz event failed; failures of operational events alone
    /// never raise `webhook_disabled` (no cascade, SPEC §10).
    pub failed_onefuzz_event: bool,
}

/// The outcomes of a batch, per webhook: applied once at its end, so ten failures to one
/// webhook in one invocation make one write, never ten that contend.
#[derive(Debug, Default)]
pub struct HealthLedger(Mutex<HashMap<WebhookId, HealthNote>>);

impl HealthLedger {
    pub fn note(&self, webhook: &Webhook, event_type: EventType, recorded: Recorded) {
        let Ok(mut notes) = self.0.lock() else { return };
        let note = notes.entry(webhook.webhook_id).or_insert_with(|| HealthNote {
            webhook: webhook.clone(),
            failed: false,
            succeeded: false,
            gone: false,
            failed_onefuzz_event: false,
        });
        if !matches!(recorded, Recorded::Delivered) && !event_type.is_operational() {
            note.failed_onefuzz_event = true;
        }
        match recorded {
            Recorded::Delivered => note.succeeded = true,
            Recorded::Retrying { .. } => note.failed = true,
            Recorded::Failed { gone } => {
                note.failed = true;
                note.gone |= gone;
            }
        }
    }

    pub fn take(&self) -> Vec<HealthNote> {
        self.0.lock().map(|mut notes| notes.drain().map(|(_, note)| note).collect()).unwrap_or_default()
    }
}

/// What a batch means for a webhook's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStep {
    /// Nothing to write: a success, or a mix (the run of failures, if any, is broken).
    Nothing,
    /// Disable it now: the endpoint answered 410.
    DisableGone,
    /// Note the failures; then judge the run with [`judge_run`].
    NoteFailures,
}

pub fn step_for(note: &HealthNote) -> HealthStep {
    if note.gone {
        HealthStep::DisableGone
    } else if note.failed && !note.succeeded {
        HealthStep::NoteFailures
    } else {
        HealthStep::Nothing
    }
}

/// Once failures are noted: whether the run that began at `since` is long enough to check,
/// and what the check means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunVerdict {
    /// Still shorter than the limit.
    TooShort,
    /// Long enough: disable unless a delivery succeeded since `since`.
    CheckForSuccess,
}

pub fn judge_run(since: DateTime<Utc>, now: DateTime<Utc>, auto_disable_after: chrono::Duration) -> RunVerdict {
    if now - since >= auto_disable_after { RunVerdict::CheckForSuccess } else { RunVerdict::TooShort }
}

/// Why a webhook is disabled, as the operator reads it (`disabled_reason`).
pub fn gone_reason() -> String {
    "the endpoint answered 410 Gone".to_owned()
}

pub fn failing_reason(since: DateTime<Utc>) -> String {
    format!("every delivery failed since {}", since.to_rfc3339())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NewWebhook, WebhookName, WebhookUrl};

    fn webhook() -> Webhook {
        Webhook::new(
            NewWebhook::new(
                WebhookName::parse("h").unwrap(),
                WebhookUrl::parse("https://example.com/", false).unwrap(),
            ),
            Utc::now(),
        )
    }

    #[test]
    fn many_failures_to_one_webhook_in_a_batch_make_one_note() {
        let ledger = HealthLedger::default();
        let hook = webhook();
        let retrying = Recorded::Retrying { attempt: 2, at: Utc::now(), delay: std::time::Duration::from_secs(5) };

        for _ in 0..10 {
            ledger.note(&hook, EventType::Ping, retrying);
        }
        let notes = ledger.take();

        assert_eq!(notes.len(), 1);
        assert_eq!(step_for(&notes[0]), HealthStep::NoteFailures);
        assert!(ledger.take().is_empty());
    }

    #[test]
    fn a_success_in_the_batch_means_nothing_to_write_and_gone_always_disables() {
        let ledger = HealthLedger::default();
        let hook = webhook();
        ledger.note(&hook, EventType::Ping, Recorded::Failed { gone: false });
        ledger.note(&hook, EventType::Ping, Recorded::Delivered);
        assert_eq!(step_for(&ledger.take()[0]), HealthStep::Nothing);

        ledger.note(&hook, EventType::Ping, Recorded::Delivered);
        ledger.note(&hook, EventType::Ping, Recorded::Failed { gone: true });
        assert_eq!(step_for(&ledger.take()[0]), HealthStep::DisableGone);

        ledger.note(&hook, EventType::Ping, Recorded::Delivered);
        assert_eq!(step_for(&ledger.take()[0]), HealthStep::Nothing);
    }

    #[test]
    fn a_run_is_checked_only_once_it_is_as_long_as_the_limit() {
        let now = Utc::now();
        let limit = chrono::Duration::days(5);

        assert_eq!(judge_run(now - chrono::Duration::days(4), now, limit), RunVerdict::TooShort);
        assert_eq!(judge_run(now - limit, now, limit), RunVerdict::CheckForSuccess);
    }
}
