//! The sender Lambda's handler: an SQS batch in, a partial batch failure response out, and one
//! CloudWatch EMF metrics line per batch.

use std::time::{Duration, Instant, SystemTime};

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures_util::future::join_all;
use serde_json::json;

use super::sender::{MessageOutcome, Sender, Tally};

/// Every record that failed for a passing reason is reported back for redelivery; invalid ones
/// go to the dead-letter queue and count as handled. The whole batch fails only when no record
/// could be processed at all. With the invocation's `deadline`, fan-outs deliver inline only
/// what fits before it and queue the rest.
pub async fn handle_sqs_event(
    sender: &Sender,
    event: SqsEvent,
    deadline: Option<SystemTime>,
) -> Result<SqsBatchResponse, lambda_runtime::Error> {
    let started = Instant::now();
    let records = event.records;
    let time_left =
        deadline.map_or(Duration::MAX, |deadline| deadline.duration_since(SystemTime::now()).unwrap_or_default());
    let inline_limit = sender.inline_limit_within(time_left, records.len());
    let outcomes = join_all(records.iter().map(|record| async move {
        let message_id = record.message_id.clone().unwrap_or_default();
        let body = record.body.as_deref().unwrap_or_default();
        let outcome = sender.handle_message_within(body, &message_id, inline_limit).await;
        let failed = match &outcome {
            MessageOutcome::Done(_) => false,
            MessageOutcome::TryAgainLater(_) => true,
            MessageOutcome::Invalid(reason) => {
                tracing::error!(message_id = %message_id, %reason, "invalid message; dead-lettering it");
                match sender.dead_letters().send(body, reason).await {
                    Ok(()) => false,
                    Err(err) => {
                        tracing::error!(message_id = %message_id, error = %err, "dead-letter send failed; leaving the message for redelivery");
                        true
                    }
                }
            }
        };
        (message_id, outcome, failed)
    }))
    .await;

    let mut tally = Tally::default();
    let mut response = SqsBatchResponse::default();
    let mut invalid = 0;
    for (message_id, outcome, failed) in &outcomes {
        match outcome {
            MessageOutcome::Done(t) => tally.add(t),
            MessageOutcome::Invalid(_) => invalid += 1,
            MessageOutcome::TryAgainLater(_) => {}
        }
        if *failed {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = message_id.clone();
            response.batch_item_failures.push(failure);
        }
    }
    emit_metrics(&tally, invalid, response.batch_item_failures.len(), started.elapsed().as_millis() as u64);
    if !outcomes.is_empty() && response.batch_item_failures.len() == outcomes.len() {
        return Err(format!("none of the {} records could be processed", outcomes.len()).into());
    }
    Ok(response)
}

/// One CloudWatch Embedded Metric Format line: CloudWatch turns it into metrics, no API calls.
pub fn emit_metrics(tally: &Tally, invalid: usize, redelivered: usize, batch_ms: u64) {
    let mut latencies = tally.latencies_ms.clone();
    latencies.sort_unstable();
    let p50 = percentile(&latencies, 50);
    let max = latencies.last().copied().unwrap_or(0);
    let line = json!({
        "_aws": {
            "Timestamp": chrono::Utc::now().timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": "Webhooks",
                "Dimensions": [[]],
                "Metrics": [
                    {"Name": "Delivered", "Unit": "Count"},
                    {"Name": "Failed", "Unit": "Count"},
                    {"Name": "Retried", "Unit": "Count"},
                    {"Name": "Exhausted", "Unit": "Count"},
                    {"Name": "Invalid", "Unit": "Count"},
                    {"Name": "Redelivered", "Unit": "Count"},
                    {"Name": "LatencyP50", "Unit": "Milliseconds"},
                    {"Name": "LatencyMax", "Unit": "Milliseconds"},
                    {"Name": "BatchDuration", "Unit": "Milliseconds"}
                ]
            }]
        },
        "Delivered": tally.delivered,
        "Failed": tally.failed,
        "Retried": tally.retried,
        "Exhausted": tally.exhausted,
        "Invalid": invalid,
        "Redelivered": redelivered,
        "LatencyP50": p50,
        "LatencyMax": max,
        "BatchDuration": batch_ms,
    });
    println!("{line}");
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() - 1) * p / 100]
}
