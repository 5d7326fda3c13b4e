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
    let mut dynamo = None;
    let store: Arc<dyn Store> = match kind {
        "embedded" => Arc::new(EmbeddedStore::open(dir.path()).map_err(|e| e.to_string())?),
        _ => {
            let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            let client = aws_sdk_dynamodb::Client::new(&sdk);
            let table = format!("webhooks-bench-{}", uuid::Uuid::new_v4());
            TableDefinition::create(&client, &table).await.map_err(|e| e.to_string())?;
            dynamo = Some((client.clone(), table.clone()));
            Arc::new(DynamoStore::new(client, table))
        }
    };
    let app = App::new(store.clone(), Arc::new(UnconfiguredQueue), Config::default());
    let seeding = Instant::now();
    // On DynamoDB, only the subscribers and one other webhook go through the store: moto copies
    // the whole table on every transaction, so 10 000 transactional creates would take hours.
    // The rest are copies of that webhook's items, written with BatchWriteItem.
    let through_store = if dynamo.is_some() { total.min(subscribed + 1) } else { total };
    let creates = (0..through_store).map(|i| {
        let app = app.clone();
        async move {
            let event_type = if i < subscribed { EventType::CrashReported } else { EventType::TaskCreated };
            app.create_webhook(NewWebhook {
                event_types: vec![event_type.into()],
                ..NewWebhook::new(
                    WebhookName::parse(&format!("hook-{i}")).map_err(|e| e.to_string())?,
                    WebhookUrl::parse("https://example.com/hook", false).map_err(|e| e.to_string())?,
                )
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
    if let Some((client, table)) = &dynamo {
        copy_webhook_items(client, table, total.saturating_sub(through_store)).await?;
    }
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
    // The emulator's own cost for the one Query fan-out makes, without the store: moto answers
    // a Query by scanning the whole table, which real DynamoDB does not.
    let mut bare_query_us = Vec::with_capacity(repeats);
    if let Some((client, table)) = &dynamo {
        for _ in 0..repeats {
            let started = Instant::now();
            client
                .query()
                .table_name(table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(
                    ":pk",
                    aws_sdk_dynamodb::types::AttributeValue::S("SUB#crash_reported".into()),
                )
                .send()
                .await
                .map_err(|e| format!("{e:?}"))?;
            bare_query_us.push(started.elapsed().as_secs_f64() * 1e6);
        }
        bare_query_us.sort_by(f64::total_cmp);
    }
    println!(
        "{}",
        json!({
            "store": kind,
            "total_webhooks": total,
            "subscribed": subscribed,
            "fanout_p50_us": percentile(&timings_us, 0.5),
            "fanout_p90_us": percentile(&timings_us, 0.9),
            "bare_query_p50_us": (!bare_query_us.is_empty()).then(|| percentile(&bare_query_us, 0.5)),
            "seed_seconds": seeded_in,
        })
    );
    Ok(())
}

/// Writes `copies` more webhooks subscribed to `task_created`, each a copy of the items the
/// store wrote for an existing one (the layout in `webhooks::store::dynamo`'s documentation)
/// under a new id.
async fn copy_webhook_items(client: &aws_sdk_dynamodb::Client, table: &str, copies: usize) -> Result<(), String> {
    use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
    if copies == 0 {
        return Ok(());
    }
    let s = |text: &str| AttributeValue::S(text.to_owned());
    let key = |pk: &str| [("pk".to_owned(), s(pk))].into_iter().collect::<std::collections::HashMap<_, _>>();
    let subscriptions = client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", s("SUB#task_created"))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let subscription = subscriptions.items().first().cloned().ok_or("no task_created subscription to copy")?;
    let Some(AttributeValue::S(sort_key)) = subscription.get("sk") else {
        return Err("subscription without sk".into());
    };
    let webhook = client
        .get_item()
        .table_name(table)
        .set_key(Some(key("WEBHOOKS").into_iter().chain([("sk".to_owned(), s(sort_key))]).collect()))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?
        .item
        .ok_or("the webhook to copy is missing")?;
    let Some(AttributeValue::S(original_id)) = webhook.get("webhook_id") else {
        return Err("webhook item without webhook_id".into());
    };
    let mut requests = Vec::with_capacity(copies * 2);
    for i in 0..copies {
        let id = uuid::Uuid::new_v4().to_string();
        let mut copy = webhook.clone();
        copy.insert("sk".into(), s(&format!("WEBHOOK#{id}")));
        copy.insert("webhook_id".into(), s(&id));
        copy.insert("name".into(), s(&format!("copy-{i}")));
        let mut sub = subscription.clone();
        sub.insert("sk".into(), s(&format!("WEBHOOK#{id}")));
        for attribute in sub.values_mut() {
            if *attribute == AttributeValue::S(original_id.clone()) {
                *attribute = s(&id);
            }
        }
        for item in [copy, sub] {
            let put = PutRequest::builder().set_item(Some(item)).build().map_err(|e| e.to_string())?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
    }
    for chunk in requests.chunks(25) {
        let mut pending = chunk.to_vec();
        for retry in 0.. {
            if pending.is_empty() {
                break;
            }
            if retry == 10 {
                return Err("BatchWriteItem kept leaving items unprocessed".into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50 * retry)).await;
            let written =
                client.batch_write_item().request_items(table, pending).send().await.map_err(|e| format!("{e:?}"))?;
            pending = written.unprocessed_items.and_then(|mut left| left.remove(table)).unwrap_or_default();
        }
    }
    Ok(())
}
