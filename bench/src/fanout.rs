//! Fan-out scaling: finding the 10 subscribers of an event type must cost the same among 100
//! webhooks as among 10 000 (a query per event type, never a scan).

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use webhooks::domain::{WebhookName, WebhookUrl};
use webhooks::events::EventType;
use webhooks::manage::NewWebhook;
use webhooks::queue::UnconfiguredQueue;
use webhooks::store::{DynamoStore, EmbeddedStore, Store, TableDefinition};
use webhooks::{App, Config};

use crate::process::percentile;

pub async fn run(kind: &str, total: usize, subscribed: usize, repeats: usize) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store: Arc<dyn Store> = match kind {
        "embedded" => Arc::new(EmbeddedStore::open(dir.path()).map_err(|e| e.to_string())?),
        _ => {
            let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            let client = aws_sdk_dynamodb::Client::new(&sdk);
            let table = format!("webhooks-bench-{}", uuid::Uuid::new_v4());
            TableDefinition::create(&client, &table).await.map_err(|e| e.to_string())?;
            Arc::new(DynamoStore::new(client, table))
        }
    };
    let app = App::new(store.clone(), Arc::new(UnconfiguredQueue), Config::default());
    let seeding = Instant::now();
    let creates = (0..total).map(|i| {
        let app = app.clone();
        async move {
            let event_types =
                if i < subscribed { vec![EventType::CrashReported] } else { vec![EventType::TaskCreated] };
            app.create_webhook(NewWebhook {
                name: WebhookName::parse(&format!("hook-{i}")).map_err(|e| e.to_string())?,
                url: WebhookUrl::parse("https://example.com/hook", false).map_err(|e| e.to_string())?,
                event_types,
                secret_token: None,
                message_format: None,
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        }
    });
    use futures_util::StreamExt;
    // moto answers 500 under many concurrent transactions; DynamoDB itself would not mind.
    let parallel = if kind == "embedded" { 16 } else { 2 };
    let results: Vec<Result<(), String>> =
        futures_util::stream::iter(creates).buffer_unordered(parallel).collect().await;
    results.into_iter().collect::<Result<Vec<()>, String>>()?;
    let seeded_in = seeding.elapsed().as_secs_f64();

    let mut timings_us = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let started = Instant::now();
        let found = store.subscribers(EventType::CrashReported).await.map_err(|e| e.to_string())?;
        timings_us.push(started.elapsed().as_secs_f64() * 1e6);
        if found.len() != subscribed {
            return Err(format!("expected {subscribed} subscribers, found {}", found.len()));
        }
    }
    timings_us.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "store": kind,
            "total_webhooks": total,
            "subscribed": subscribed,
            "fanout_p50_us": percentile(&timings_us, 0.5),
            "fanout_p90_us": percentile(&timings_us, 0.9),
            "seed_seconds": seeded_in,
        })
    );
    Ok(())
}
