//! Delivery throughput: the engine against plain POSTs of the same size with the same
//! concurrency, to the same receiver.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use uuid::Uuid;
use webhooks::delivery::{CidrList, MessageOutcome, Sender};
use webhooks::domain::{SecretToken, WebhookName, WebhookUrl};
use webhooks::events::EventType;
use webhooks::manage::NewWebhook;
use webhooks::queue::{DeadLetters, Queue, QueueError, QueueMessage};
use webhooks::store::{EmbeddedStore, Store};
use webhooks::{App, Config};

use crate::process::{cpu_seconds, current_rss_mib, peak_rss_mib, percentile};

/// Plain POSTs through hyper's pooled client, the transport the delivery client uses.
pub async fn raw(url: &str, requests: usize, concurrency: usize, body_bytes: usize) -> Result<(), String> {
    use http_body_util::{BodyExt, Full};
    let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| e.to_string())?;
    let body = bytes::Bytes::from(json!({"padding": "x".repeat(body_bytes)}).to_string());
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, body, next, uri) = (client.clone(), body.clone(), next.clone(), uri.clone());
            tokio::spawn(async move {
                let mut failed = 0;
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    let request = http::Request::post(uri.clone())
                        .header("content-type", "application/json")
                        .body(Full::new(body.clone()));
                    let Ok(request) = request else {
                        failed += 1;
                        continue;
                    };
                    match client.request(request).await {
                        Ok(response) if response.status().is_success() => {
                            let _ = response.into_body().collect().await;
                        }
                        _ => failed += 1,
                    }
                }
                failed
            })
        })
        .collect();
    let mut failed = 0;
    for worker in workers {
        failed += worker.await.map_err(|e| e.to_string())?;
    }
    report("raw", requests - failed, failed, started.elapsed(), cpu_seconds() - cpu_before, &mut []);
    Ok(())
}

pub async fn engine(
    url: &str,
    events: usize,
    subscribers: usize,
    concurrency: usize,
    body_bytes: usize,
) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store: Arc<dyn Store> = Arc::new(
        match std::env::var("BENCH_STORE").as_deref() {
            Ok("memory") => EmbeddedStore::in_memory(),
            _ => EmbeddedStore::open(dir.path()),
        }
        .map_err(|e| e.to_string())?,
    );
    let config = Config { delivery_concurrency: concurrency, ..Config::default() };
    let sender = sender_with_subscribers(store, config, url, subscribers).await?;
    let padding = "x".repeat(body_bytes.saturating_sub(300));
    // Enough events in flight to keep `concurrency` requests busy while others' log entries are
    // written, as the local worker's batches of due messages do.
    let events_in_flight = std::env::var("BENCH_EVENTS_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| (concurrency * 4).div_ceil(subscribers.max(1)).max(2));
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    // Each event is its own task, as the local worker runs them, so both cores are used.
    let sender = Arc::new(sender);
    let slots = Arc::new(tokio::sync::Semaphore::new(events_in_flight));
    let mut handles = Vec::with_capacity(events);
    for _ in 0..events {
        let permit = slots.clone().acquire_owned().await.map_err(|e| e.to_string())?;
        let body = json!({
            "event_type": "ping",
            "event": {"ping_id": Uuid::new_v4(), "padding": padding},
            "created_at": chrono::Utc::now(),
        })
        .to_string();
        let sender = sender.clone();
        handles.push(tokio::spawn(async move {
            let outcome = sender.handle_message(&body, &Uuid::new_v4().to_string()).await;
            drop(permit);
            outcome
        }));
    }
    let mut outcomes: Vec<MessageOutcome> = Vec::with_capacity(events);
    for handle in handles {
        outcomes.push(handle.await.map_err(|e| e.to_string())?);
    }
    let elapsed = started.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    let (mut delivered, mut failed, mut latencies) = (0, 0, Vec::new());
    for outcome in outcomes {
        match outcome {
            MessageOutcome::Done(tally) => {
                delivered += tally.delivered as usize;
                failed += tally.failed as usize;
                latencies.extend(tally.latencies_ms.iter().map(|ms| *ms as f64));
            }
            _ => failed += subscribers,
        }
    }
    report("engine", delivered, failed, elapsed, cpu, &mut latencies);
    Ok(())
}

/// The sender Lambda's handler on repeated SQS batches: each batch's wall time, and whether
/// memory stays flat as batches repeat.
pub async fn batches(url: &str, events: usize, subscribers: usize, batches: usize) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).map_err(|e| e.to_string())?);
    let config = Config { fanout_inline_limit: subscribers, ..Config::default() };
    let sender = sender_with_subscribers(store, config, url, subscribers).await?;
    let mut times_ms = Vec::with_capacity(batches);
    let mut rss_after_first = 0.0;
    for batch in 0..batches {
        let mut event = aws_lambda_events::sqs::SqsEvent::default();
        for _ in 0..events {
            let mut message = aws_lambda_events::sqs::SqsMessage::default();
            message.message_id = Some(Uuid::new_v4().to_string());
            message.body = Some(json!({"event_type": "ping", "event": {"ping_id": Uuid::new_v4()}}).to_string());
            event.records.push(message);
        }
        let started = Instant::now();
        let response = webhooks::delivery::handle_sqs_event(&sender, event, None).await.map_err(|e| e.to_string())?;
        times_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        if !response.batch_item_failures.is_empty() {
            return Err(format!("batch {batch}: {} records failed", response.batch_item_failures.len()));
        }
        if batch == 0 {
            rss_after_first = current_rss_mib();
        }
    }
    let mut sorted = times_ms.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "mode": "batches",
            "events_per_batch": events,
            "subscribers": subscribers,
            "batches": batches,
            "batch_ms_median": percentile(&sorted, 0.5),
            "batch_ms_max": sorted.last().copied().unwrap_or_default(),
            "rss_after_first_batch_mib": rss_after_first,
            "rss_after_last_batch_mib": current_rss_mib(),
        })
    );
    Ok(())
}

/// A sender on `store` with `subscribers` webhooks at `url`, all subscribed to `ping`.
async fn sender_with_subscribers(
    store: Arc<dyn Store>,
    config: Config,
    url: &str,
    subscribers: usize,
) -> Result<Sender, String> {
    let config = Arc::new(config);
    let sender =
        Sender::new(store.clone(), Arc::new(Discard), Arc::new(Discard), config.clone(), &CidrList::loopback())
            .map_err(|e| e.to_string())?;
    let app = App { store, queue: Arc::new(Discard), config };
    for i in 0..subscribers {
        app.create_webhook(NewWebhook {
            event_types: vec![EventType::Ping.into()],
            secret_token: Some(SecretToken::parse("bench-secret").map_err(|e| e.to_string())?),
            ..NewWebhook::new(
                WebhookName::parse(&format!("bench-{i}")).map_err(|e| e.to_string())?,
                WebhookUrl::parse(url, false).map_err(|e| e.to_string())?,
            )
        })
        .await
        .map_err(|e| e.to_string())?;
    }
    Ok(sender)
}

fn report(mode: &str, delivered: usize, failed: usize, elapsed: Duration, cpu: f64, latencies: &mut [f64]) {
    latencies.sort_by(f64::total_cmp);
    let per_second = delivered as f64 / elapsed.as_secs_f64();
    println!(
        "{}",
        json!({
            "mode": mode,
            "delivered": delivered,
            "failed": failed,
            "seconds": elapsed.as_secs_f64(),
            "per_second": per_second,
            "cpu_seconds_per_1000": if delivered > 0 { cpu * 1000.0 / delivered as f64 } else { 0.0 },
            "latency_p50_ms": percentile(latencies, 0.50),
            "latency_p99_ms": percentile(latencies, 0.99),
            "peak_rss_mib": peak_rss_mib(),
        })
    );
}

/// A queue and dead-letter sink that drop everything: the benchmark's receiver never fails,
/// so nothing is retried.
struct Discard;

#[async_trait]
impl Queue for Discard {
    async fn send(&self, _message: &QueueMessage, _delay: Duration) -> Result<(), QueueError> {
        Ok(())
    }
}

#[async_trait]
impl DeadLetters for Discard {
    async fn send(&self, _body: &str, _reason: &str) -> Result<(), QueueError> {
        Ok(())
    }
}
