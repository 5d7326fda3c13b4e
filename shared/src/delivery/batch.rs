//! The sender Lambda's handler: an SQS batch in, a partial batch failure response out, and one
//! CloudWatch EMF metrics line per batch.

use std::time::{Duration, Instant, SystemTime};

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::future::join_all;
use serde_json::json;

use super::sender::{MessageOutcome, Received, Sender, Tally};

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
    let received: Vec<Received<'_>> = records.iter().map(received).collect();
    let outcomes = sender.handle_batch(&received, inline_limit).await;
    let failed = join_all(received.iter().zip(&outcomes).map(|(message, outcome)| async move {
        match outcome {
            MessageOutcome::Done(_) => false,
            MessageOutcome::TryAgainLater(_) | MessageOutcome::Held(_) => true,
            MessageOutcome::Invalid(reason) => {
                // The reason can quote the producer's payload: cut short in the log, whole on the
                // dead-letter message.
                let logged = crate::telemetry::client_value(reason);
                tracing::error!(message_id = %message.message_id, reason = %logged, "invalid message; dead-lettering it");
                match sender.dead_letters().send(message.body, reason).await {
                    Ok(()) => false,
                    Err(err) => {
                        tracing::error!(message_id = %message.message_id, error = %err, "dead-letter send failed; leaving the message for redelivery");
                        true
                    }
                }
            }
        }
    }))
    .await;

    let mut tally = Tally::default();
    let mut response = SqsBatchResponse::default();
    let mut invalid = 0;
    let mut unavailable = 0;
    for ((message, outcome), failed) in received.iter().zip(&outcomes).zip(failed) {
        match outcome {
            MessageOutcome::Done(t) => tally.add(t),
            MessageOutcome::Invalid(_) => invalid += 1,
            MessageOutcome::TryAgainLater(_) => unavailable += 1,
            MessageOutcome::Held(_) => {}
        }
        if failed {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = message.message_id.to_owned();
            response.batch_item_failures.push(failure);
        }
    }
    emit_metrics(&tally, invalid, response.batch_item_failures.len(), started.elapsed().as_millis() as u64);
    // Every record failing for a passing reason (not merely held back by a claim) is an outage:
    // failing the invocation fires the function's error alarm and slows Lambda's polling.
    if !outcomes.is_empty() && unavailable == outcomes.len() {
        return Err(format!("none of the {} records could be processed", outcomes.len()).into());
    }
    Ok(response)
}

/// A record as the sender takes it: Lambda passes SQS's receive count and send time among the
/// record's attributes.
fn received(record: &SqsMessage) -> Received<'_> {
    let attribute = |name: &str| record.attributes.get(name).and_then(|value| value.parse::<i64>().ok());
    Received {
        body: record.body.as_deref().unwrap_or_default(),
        message_id: record.message_id.as_deref().unwrap_or_default(),
        receive_count: attribute("ApproximateReceiveCount").and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
        sent_at: attribute("SentTimestamp").and_then(chrono::DateTime::from_timestamp_millis),
    }
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
